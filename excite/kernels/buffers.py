"""Reused memory for large kernel outputs: ``empty(shape, dtype)`` like ``np.empty``, without page faults.

The C library hands arrays above a few MB straight back to the operating system when they are
freed, so the next forward pass maps fresh pages and takes a fault (and the kernel zeroes a
page) for every 4 KB it writes: at batch 16 that was a tenth to a third of EfficientNet-B0's
time here. This pool keeps such blocks and hands a block out again once nothing refers to it
any more: every array made from a block (views, reshapes, transposes) holds a reference to it,
so a block whose reference count is back to the pool's own is free. Networks allocate the same
shapes pass after pass, so exact sizes match. The pool holds at most LIMIT_BYTES; beyond that,
free blocks are dropped oldest first, and a size that still does not fit is not pooled.

``EXCITE_BUFFER_POISON=1`` (a debugging switch, also used by the tests) fills every float array
handed out here with NaN, pooled or not: a kernel that reads an output element before writing it
then yields NaN instead of whatever an earlier call left in the block.
"""
import os
import sys
import threading

import numpy as np

MIN_BYTES = 1 << 20  # smaller arrays come from the C library's heap, which keeps its pages
PAGE = 1 << 12
_lock = threading.Lock()
_blocks = {}  # size in bytes -> list of uint8 arrays (oldest first)
_total = 0
POISON = os.environ.get("EXCITE_BUFFER_POISON", "").strip() == "1"


def _limit():
    """At most a quarter of the machine's memory (2 GiB if that is unknown), or EXCITE_BUFFER_POOL_MB."""
    value = os.environ.get("EXCITE_BUFFER_POOL_MB", "").strip()
    if value:
        try:
            return max(0, int(value)) << 20
        except ValueError:
            pass
    try:
        return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") // 4
    except (ValueError, OSError, AttributeError):
        return 2 << 30


LIMIT_BYTES = _limit()


def _references(blocks, i):
    return sys.getrefcount(blocks[i])


# the count _references reports for a block nothing else refers to (measured, not assumed: it
# depends on the interpreter)
_FREE = _references([np.empty(1, np.uint8)], 0)


def _view(raw, nbytes, shape, dtype):
    return raw[:nbytes].view(dtype).reshape(shape)


def _drop_free(needed=None):
    """Drop free blocks, oldest first: all of them, or (``needed`` bytes) until that many more fit
    under the limit. Returns whether they fit. (Indexing only: a loop variable would hold a reference.)"""
    global _total

    def fits():
        return needed is not None and _total + needed <= LIMIT_BYTES

    for size in list(_blocks):
        blocks = _blocks[size]
        i = 0
        while i < len(blocks) and not fits():
            if _references(blocks, i) <= _FREE:
                blocks.pop(i)
                _total -= size
            else:
                i += 1
        if not blocks:
            del _blocks[size]
        if fits():
            return True
    return fits()


def empty(shape, dtype):
    """An uninitialised C-contiguous array, from a reused block when it is large (NaN under `POISON`)."""
    return _poisoned(_empty(shape, dtype))


def _poisoned(out):
    if POISON and out.dtype.kind == "f":
        out.fill(np.nan)
    return out


def _empty(shape, dtype):
    global _total
    dtype = np.dtype(dtype)
    nbytes = dtype.itemsize
    for s in shape:
        nbytes *= s
    if nbytes < MIN_BYTES:
        return np.empty(shape, dtype)
    shape = tuple(int(s) for s in shape)
    size = -(-nbytes // PAGE) * PAGE
    with _lock:
        blocks = _blocks.setdefault(size, [])
        for i in range(len(blocks)):
            if _references(blocks, i) <= _FREE:
                blocks.append(blocks.pop(i))  # most recently used last: evicted last
                return _view(blocks[-1], nbytes, shape, dtype)
        if _total + size > LIMIT_BYTES and not _drop_free(size):
            if not blocks:
                del _blocks[size]
            return np.empty(shape, dtype)
        raw = np.empty(size, np.uint8)
        blocks.append(raw)
        _total += size
        return _view(raw, nbytes, shape, dtype)


ALIGNMENT = 64  # bytes: a cache line, and one AVX-512 vector


def aligned_empty(shape, dtype):
    """``np.empty(shape, dtype)`` (C order) starting on an `ALIGNMENT`-byte boundary. The C library's
    large blocks start 16 bytes past one, so without this every 64-byte vector a kernel loads or stores
    straddles two cache lines: the depthwise convolutions ran 7-18 % slower that way, the products with
    large outputs 3-9 %. For arrays made once and used many times (a compiled graph's buffers and
    weights): each allocation costs a slice and a view more than ``np.empty``."""
    dtype = np.dtype(dtype)
    nbytes = dtype.itemsize * int(np.prod(shape, dtype=np.int64))
    raw = np.empty(nbytes + ALIGNMENT, np.uint8)
    start = -raw.ctypes.data % ALIGNMENT
    return raw[start:start + nbytes].view(dtype).reshape(shape)


def aligned(a):
    """A C-order copy of ``a`` in an `aligned_empty` array."""
    out = aligned_empty(a.shape, a.dtype)
    np.copyto(out, a)
    return out


def zeros(shape, dtype):
    out = empty(shape, dtype)
    out.fill(0)
    return out


def empty_like(a, dtype=None):
    """``np.empty_like(a, dtype)``: the same memory layout (reused blocks for C order and channels-last)."""
    dtype = a.dtype if dtype is None else dtype
    if a.flags.c_contiguous:
        return empty(a.shape, dtype)
    if a.ndim == 4 and a.transpose(0, 2, 3, 1).flags.c_contiguous:
        n, c, h, w = a.shape
        return empty((n, h, w, c), dtype).transpose(0, 3, 1, 2)
    return _poisoned(np.empty_like(a, dtype=dtype))  # any other layout, kept as NumPy keeps it


def pooled_bytes():
    """Bytes the pool holds (in use or free)."""
    return _total


def clear():
    """Drop every free block (blocks in use stay until their arrays are gone)."""
    with _lock:
        _drop_free()
