"""Thread-local switch that decides whether operations record a graph."""
import functools
import threading

_state = threading.local()


def is_grad_enabled():
    return getattr(_state, "enabled", True)


def _set(mode):
    _state.enabled = bool(mode)


class _GradModeContext:
    """Base for context managers that also work as decorators."""

    _mode = True

    def __enter__(self):
        self._prev = is_grad_enabled()
        _set(self._mode)
        return self

    def __exit__(self, *exc):
        _set(self._prev)
        return False

    def __call__(self, fn):
        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            with self.__class__():
                return fn(*args, **kwargs)

        return wrapper


class no_grad(_GradModeContext):
    """Disable graph recording in this thread, as a context manager or decorator."""

    _mode = False


class enable_grad(_GradModeContext):
    """Enable graph recording in this thread, as a context manager or decorator."""

    _mode = True


class set_grad_enabled:
    """Set grad mode now; restore the previous mode when used as a context manager."""

    def __init__(self, mode):
        self._prev = is_grad_enabled()
        _set(mode)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _set(self._prev)
        return False
