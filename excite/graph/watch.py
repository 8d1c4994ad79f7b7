"""Watching the engine run: a per-thread watcher sees every module call and every Function applied.

`excite.autograd.function.observer` is the one hook point (Module.__call__ and Function.apply
check it); while any thread watches, it is set to `_Dispatch`, which forwards to the watcher of
the calling thread, so other threads run unobserved.
"""
import threading
from contextlib import contextmanager

from ..autograd import function as _function

_local = threading.local()
_lock = threading.Lock()
_active = 0


class Watcher:
    """Base class: override `call_module` / `applied`. ``plain`` asks blocks to run their layers
    one by one instead of their fused Functions (a capture wants the primitive ops)."""

    plain = False

    def call_module(self, module, args, kwargs):
        return module._call_impl(*args, **kwargs)

    def applied(self, function, args, kwargs, result):
        pass


class _Dispatch:
    @staticmethod
    def call_module(module, args, kwargs):
        watcher = getattr(_local, "watcher", None)
        if watcher is None:
            return module._call_impl(*args, **kwargs)
        return watcher.call_module(module, args, kwargs)

    @staticmethod
    def applied(function, args, kwargs, result):
        watcher = getattr(_local, "watcher", None)
        if watcher is not None:
            watcher.applied(function, args, kwargs, result)

    @staticmethod
    def plain():
        watcher = getattr(_local, "watcher", None)
        return watcher is not None and watcher.plain


@contextmanager
def watching(watcher):
    """Run the block with ``watcher`` seeing this thread's modules and Functions."""
    global _active
    if getattr(_local, "watcher", None) is not None:
        raise RuntimeError("a watcher is already active in this thread")
    with _lock:
        _active += 1
        _function.observer = _Dispatch
    _local.watcher = watcher
    try:
        yield watcher
    finally:
        _local.watcher = None
        with _lock:
            _active -= 1
            if _active == 0:
                _function.observer = None
