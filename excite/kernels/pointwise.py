"""Pointwise (1x1) convolutions as matrix products over channels-last pixels, epilogue fused.

``pointwise(a, w, ...)`` computes ``act((a @ w.T) * scale + shift) + residual`` for ``a`` [M, C]
(one row per pixel) and ``w`` [O, C], choosing the `gemm` micro-kernel and how to split the work
into tasks for the threads. Importable without numba (the kernels load on first use).
"""
import functools

import numpy as np

from . import activation as A
from . import activations, buffers, threads
from .threads import LazyModule

gemm = LazyModule("gemm")  # compiled kernels: numba loads on first use

ROW_TASKS_MIN_ROWS = 1024  # split rows (not columns) among the threads from this many rows
NS_PER_MADD = 0.012  # single-thread cost per multiply-add (measured: 0.01-0.014), for the threading decision
# the kernel choice: the dot kernel reaches about K / (K + DOT_FOLD_DEPTH) of the broadcast kernel's
# rate (its per-output folding is amortised over the depth K); the broadcast kernel first transposes
# the weight, at about TRANSPOSE_MADDS multiply-adds' worth of time per element
DOT_FOLD_DEPTH = 80
TRANSPOSE_MADDS = 50
# a compiled graph's plans (``kept``) lay the weight out once, so its cost no longer counts against the
# broadcast kernel; from this many rows it is then the faster one for products that widen the channels at
# least this many times (at batch 1, 7x7 pixels, 2 threads: 96 -> 576 channels 36 vs 61 us, 160 -> 960
# 85-153 vs 119-170 us, 320 -> 1280 224-235 vs 257-285 us). Only there: elsewhere the two kernels' sums
# would part from the eager run's (RegNet's 2x widenings, amplified by its depth, to 1e-5 relative)
KEPT_BROADCAST_MIN_ROWS = 24
KEPT_BROADCAST_MIN_WIDENING = 4
SUPPORTED = (np.float32, np.float64)


def supported(a, w):
    return a.dtype == w.dtype and a.dtype in SUPPORTED


def _task_count():
    return threads.configured().threads


def _weight_matrix(w):
    """[O, C] C-contiguous view or copy of a [O, C] or [O, C, 1, 1] weight."""
    return np.ascontiguousarray(w.reshape(w.shape[0], -1))


def _broadcast_is_faster(m, k, n, kept=False):
    """Estimated time of the broadcast kernel (transpose included, unless the plan is ``kept``) below the
    dot kernel's."""
    if kept and m >= KEPT_BROADCAST_MIN_ROWS and KEPT_BROADCAST_MIN_WIDENING * k <= n:
        return True
    madds = m * k * n
    return madds + TRANSPOSE_MADDS * k * n < madds * (k + DOT_FOLD_DEPTH) / k


def pointwise(a, w, scale=None, shift=None, activation=None, residual=None, out=None):
    """``act((a @ w.T) * scale + shift) + residual`` as a new (or the given ``out``) [M, O] array.

    ``a`` [M, C] and ``residual`` [M, O] are C-contiguous; ``scale`` / ``shift`` are per output
    channel (None: 1 and 0); ``activation`` is a registry name (`activations`) or None.
    """
    plan = Pointwise(a.shape[0], w, scale, shift, activation, a.dtype)
    return plan(a, buffers.empty((a.shape[0], plan.n), a.dtype) if out is None else out, residual)


class Pointwise:
    """One 1x1 product for ``m`` rows, prepared once: ``plan(a, out, residual=None)`` writes
    ``act((a @ w.T) * scale + shift) + residual`` into ``out`` [M, O].

    The micro-kernel (broadcast or dot), its operand layout (the transposed weight for the broadcast
    kernel) and the split into tasks are chosen here, for this shape; a compiled graph keeps the plan and
    calls it every run, and says so (``kept``): its transposed weight is laid out in panels
    (`packed_panels`), which costs more once and less at every call.
    """

    def __init__(self, m, w, scale=None, shift=None, activation=None, dtype=None, kept=False):
        dtype = np.dtype(w.dtype if dtype is None else dtype)
        w = _weight_matrix(w).astype(dtype, copy=False)
        n, k = w.shape
        self.m, self.k, self.n = m, k, n
        self.kind, self.later = A.compiled_code(activation)
        self.scale = np.ones(n, dtype) if scale is None else np.ascontiguousarray(scale, dtype=dtype)
        self.shift = np.zeros(n, dtype) if shift is None else np.ascontiguousarray(shift, dtype=dtype)
        self.no_residual = np.empty((0, 0), dtype)
        self.work_ns = m * k * n * NS_PER_MADD
        tasks = _task_count()
        if _broadcast_is_faster(m, k, n, kept):
            if kept:
                self.operand = packed_panels(w, dtype)
            else:  # one call: the plain transpose, NumPy's blocked copy (the kernel sums it to the same bits)
                self.operand = np.empty((k, n), dtype)
                np.copyto(self.operand, w.T)
            self.blocks = _broadcast_blocks(m, n, dtype)
            self.kernel = gemm.matmul_broadcast
        else:
            self.operand = buffers.aligned(_dot_operand(w)) if kept else _dot_operand(w)
            self.blocks = (m, -(-(-(-n // tasks)) // gemm.DOT) * gemm.DOT)
            self.kernel = gemm.matmul_dot

    def __call__(self, a, out, residual=None):
        if self.later is not None:  # an activation registered at run time: applied after the compiled product
            self.kernel(a, self.operand, out, self.scale, self.shift, self.no_residual, self.kind, *self.blocks,
                        work_ns=self.work_ns)
            A.forward(out, self.later, out=out)
            if residual is not None:
                out += residual
            return out
        self.kernel(a, self.operand, out, self.scale, self.shift, self.no_residual if residual is None else residual,
                    self.kind, *self.blocks, work_ns=self.work_ns)
        return out

    def bind(self, a, out, residual=None):
        """``self(a, out, residual)`` on arrays that stay the same from call to call, as a function of no
        arguments (`threads.BoundKernel`)."""
        if self.later is not None:
            return functools.partial(self, a, out, residual)
        return self.kernel.bind(a, self.operand, out, self.scale, self.shift,
                                self.no_residual if residual is None else residual, self.kind, *self.blocks,
                                work_ns=self.work_ns)


ALIASED_ROW_BYTES = 2048  # weight rows this many bytes apart (or a multiple) share L1 cache sets
ROW_PADDING_BYTES = 64


def _dot_operand(w):
    """The dot kernel's [N, K] weight, its rows padded by a cache line when they would start a multiple of
    ALIASED_ROW_BYTES apart: the tile reads 16 rows side by side, and rows 4 KB apart all map to one L1
    set (1x1024x1000 at batch 1, 1 thread: 138 us, 1x1000x1000 81 us)."""
    n, k = w.shape
    if (k * w.itemsize) % ALIASED_ROW_BYTES:
        return w
    padded = np.zeros((n, k + ROW_PADDING_BYTES // w.itemsize), w.dtype)
    padded[:, :k] = w
    return padded


def packed_panels(w, dtype):
    """The broadcast kernel's weight operand for ``w`` [N, K], in panels: [panels * K, NR], panel p's
    rows being w.T's columns p * NR .. (p + 1) * NR (zeros past N). A tile then reads one contiguous
    K x NR block, where w.T's rows N * itemsize apart would share few L1 sets (N = 1152 in float32:
    every eighth row in the same set)."""
    n, k = w.shape
    nr = gemm.panel_width(dtype)
    panels = -(-n // nr)
    rows = np.zeros((panels * nr, k), dtype)
    rows[:n] = w
    return buffers.aligned(rows.reshape(panels, nr, k).transpose(0, 2, 1)).reshape(panels * k, nr)


def _broadcast_blocks(m, n, dtype):
    """(row block, panel group) of the broadcast kernel: one task per thread, by rows when there are many."""
    tasks = _task_count()
    panels = -(-n // gemm.panel_width(dtype))
    if m >= ROW_TASKS_MIN_ROWS or panels < tasks:
        return -(-(-(-m // tasks)) // gemm.MR) * gemm.MR, panels
    return m, -(-panels // tasks)


def _broadcast(a, b, scale, shift, kind, residual, out):
    """The broadcast kernel on ``a`` [M, K] and ``b`` [K, N], split into one task per thread."""
    m, k = a.shape
    n = b.shape[1]
    gemm.matmul_broadcast(a, b, out, scale, shift, residual, kind, *_broadcast_blocks(m, n, a.dtype),
                          work_ns=m * k * n * NS_PER_MADD)
    return out


def input_gradient(grad, w):
    """``grad @ w`` [M, C] for ``grad`` [M, O] and the weight [O, C] (or [O, C, 1, 1]): the input
    gradient of a 1x1 convolution; the weight is already the broadcast kernel's right operand."""
    w = _weight_matrix(w)
    n = w.shape[1]
    dtype = grad.dtype
    return _broadcast(grad, w, np.ones(n, dtype), np.zeros(n, dtype), activations.IDENTITY, np.empty((0, 0), dtype),
                      buffers.empty((grad.shape[0], n), dtype))


GRADIENT_CHUNKS = 8  # the weight gradient sums over this many fixed chunks of the pixels (any thread count)
GRADIENT_BLOCK_BYTES = 1 << 17  # rows of both operands a task sweeps across its tiles at a time


def weight_gradient(grad, x):
    """``grad.T @ x`` [O, C] for ``grad`` [M, O] and ``x`` [M, C] (C-contiguous pixel rows): the
    weight gradient of a 1x1 convolution, with the compiled column tiles (no transposed copies)."""
    m, o = grad.shape
    c = x.shape[1]
    chunks = max(1, min(GRADIENT_CHUNKS, m // 64))
    partial = np.empty((chunks, o, c), grad.dtype)
    k_block = max(gemm.MR, GRADIENT_BLOCK_BYTES // ((o + c) * grad.itemsize))
    gemm.matmul_at_b(grad, x, partial, k_block, work_ns=m * o * c * NS_PER_MADD)
    return partial[0] if chunks == 1 else partial.sum(axis=0)
