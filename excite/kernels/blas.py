"""Matrix products on excite's threads: single-threaded BLAS calls on disjoint blocks of the output.

The BLAS is set to one thread (`threads.configured`); a product big enough to pay for a thread
handoff is cut into one row block (or column block when there are few rows) of the output per
thread, each computed by one full-depth BLAS call. No block sums partial products, so results
are reproducible for a given thread count (the BLAS may round differently for other block
shapes, so they can change in the last bits with EXCITE_NUM_THREADS).
"""
import threading

import numpy as np

from . import threads

MIN_PARALLEL_FLOPS = 1 << 24  # below this (~0.3 ms) a handoff is not worth its risk on a busy machine
BLOCK_FLOPS = 1 << 23  # at least this much work per block
MIN_BLOCK = 16  # rows (or columns) per block at least
_pool = None
_pool_lock = threading.Lock()


def _executor(workers):
    """The shared pool (created once, sized for the configured thread count)."""
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                from concurrent.futures import ThreadPoolExecutor

                _pool = ThreadPoolExecutor(max_workers=workers, thread_name_prefix="excite-blas")
    return _pool


def _split(size, parts):
    bounds = np.linspace(0, size, parts + 1).astype(int)
    return [(int(a), int(b)) for a, b in zip(bounds[:-1], bounds[1:]) if b > a]


def _blocks(m, n, k, parts):
    """Up to ``parts`` output blocks of at least `BLOCK_FLOPS` each, or None for one plain call."""
    flops = 2 * m * n * k
    parts = int(min(parts, flops // BLOCK_FLOPS))
    if parts <= 1 or flops < MIN_PARALLEL_FLOPS:
        return None
    if m >= MIN_BLOCK * parts:
        return [(slice(lo, hi), slice(None)) for lo, hi in _split(m, parts)]
    if n >= MIN_BLOCK * parts:
        return [(slice(None), slice(lo, hi)) for lo, hi in _split(n, parts)]
    return None


def matmul(a, b, out=None):
    """``a @ b`` for 2-D arrays (either may be a transposed view), into ``out`` if given."""
    m, k = a.shape
    n = b.shape[1]
    if out is None:
        out = np.empty((m, n), dtype=np.result_type(a, b))
    state = threads.configured()
    blocks = None
    if state.blas_single_threaded and state.threads > 1 and not threads._forked:
        blocks = _blocks(m, n, k, state.threads)
    if blocks is None:
        return np.matmul(a, b, out=out)

    def run(block):
        rows, cols = block
        np.matmul(a[rows], b[:, cols], out=out[rows, cols])

    pending = [_executor(state.threads - 1).submit(run, blk) for blk in blocks[1:]]
    run(blocks[0])
    for f in pending:
        f.result()
    return out
