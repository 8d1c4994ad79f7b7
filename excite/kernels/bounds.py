"""EXCITE_KERNEL_BOUNDSCHECK=1: compiled kernels check every memory access and raise IndexError outside an array.

For tests and CI, not for speed. The kernels' raw pointer arithmetic (`compiled.simd` and the tiles
built on it) then checks each vector, masked and scalar access against the length of the array it
reaches into, and the plain numba loops get numba's ``boundscheck``. Checked kernels run serially
(numba drops an exception raised on one of its worker threads) and are cached on disk under names of
their own (numba's cache does not know the flag: a checked kernel must never be loaded in place of a
plain one, nor the reverse).
"""
import os

ENV = "EXCITE_KERNEL_BOUNDSCHECK"
_enabled = None


def enabled():
    """Whether this process compiles checked kernels: read once, when the first kernel is compiled
    (checked and unchecked code must not mix in one process)."""
    global _enabled
    if _enabled is None:
        _enabled = os.environ.get(ENV, "").strip() == "1"
    return _enabled


SUFFIX = "_boundscheck"  # of the qualname, hence the cache files, of a checked kernel or helper


def jit_options(options):
    """numba.njit ``options`` of a kernel or helper, made serial and bounds-checked when `enabled`
    (compile it under a qualname ending in `SUFFIX` then)."""
    if not enabled():
        return options
    return dict(options, parallel=False, boundscheck=True)
