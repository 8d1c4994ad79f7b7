"""Thread-local switch that decides whether operations record a graph."""
import functools
import threading

_state = threading.local()


def is_grad_enabled():
    return getattr(_state, "enabled", True)


def _set(mode):
    _state.enabled = bool(mode)


class _GradModeContext:
    """Base for context managers that also work as decorators, with or without parentheses."""

    _mode = True

    def __new__(cls, orig_func=None):
        if orig_func is None:
            return super().__new__(cls)
        if not callable(orig_func):
            raise TypeError(f"{cls.__name__}() takes no arguments (got {orig_func!r})")
        return cls()(orig_func)

    def __enter__(self):
        # a stack, so that one instance can be entered again while already active (nested `with`)
        self.__dict__.setdefault("_previous", []).append(is_grad_enabled())
        _set(self._mode)
        return self

    def __exit__(self, *exc):
        _set(self._previous.pop())
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
    """Set grad mode now; restore the previous mode when used as a context manager or decorator."""

    def __init__(self, mode):
        self._prev = is_grad_enabled()
        self._mode = bool(mode)
        _set(mode)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        _set(self._prev)
        return False

    def __call__(self, fn):
        # as a decorator the mode applies only inside calls, so undo the switch __init__ made
        _set(self._prev)
        mode = self._mode

        @functools.wraps(fn)
        def wrapper(*args, **kwargs):
            previous = is_grad_enabled()
            _set(mode)
            try:
                return fn(*args, **kwargs)
            finally:
                _set(previous)

        return wrapper
