"""Pointwise (1x1) convolutions as matrix products over channels-last pixels, epilogue fused.

``pointwise(a, w, ...)`` computes ``act((a @ w.T) * scale + shift) + residual`` for ``a`` [M, C]
(one row per pixel) and ``w`` [O, C], choosing the `gemm` micro-kernel and how to split the work
into tasks for the threads. Importable without numba (the kernels load on first use).
"""
import numpy as np

from . import threads
from .activation_kinds import IDENTITY
from .threads import LazyModule

gemm = LazyModule("gemm")  # compiled kernels: numba loads on first use

ROW_TASKS_MIN_ROWS = 1024  # split rows (not columns) among the threads from this many rows
NS_PER_MADD = 0.012  # single-thread cost per multiply-add (measured: 0.01-0.014), for the threading decision
# the kernel choice: the dot kernel reaches about K / (K + DOT_FOLD_DEPTH) of the broadcast kernel's
# rate (its per-output folding is amortised over the depth K); the broadcast kernel first transposes
# the weight, at about TRANSPOSE_MADDS multiply-adds' worth of time per element
DOT_FOLD_DEPTH = 80
TRANSPOSE_MADDS = 50
SUPPORTED = (np.float32, np.float64)


def supported(a, w):
    return a.dtype == w.dtype and a.dtype in SUPPORTED


def _task_count():
    return threads.configured().threads


def _weight_matrix(w):
    """[O, C] C-contiguous view or copy of a [O, C] or [O, C, 1, 1] weight."""
    return np.ascontiguousarray(w.reshape(w.shape[0], -1))


def _broadcast_is_faster(m, k, n):
    """Estimated time of the broadcast kernel (transpose included) below the dot kernel's."""
    madds = m * k * n
    return madds + TRANSPOSE_MADDS * k * n < madds * (k + DOT_FOLD_DEPTH) / k


def pointwise(a, w, scale=None, shift=None, kind=IDENTITY, residual=None, out=None):
    """``act((a @ w.T) * scale + shift) + residual`` as a new (or the given ``out``) [M, O] array.

    ``a`` [M, C] and ``residual`` [M, O] are C-contiguous; ``scale`` / ``shift`` are per output
    channel (None: 1 and 0); ``kind`` is an `activation_kinds` code.
    """
    m, k = a.shape
    w = _weight_matrix(w)
    n = w.shape[0]
    dtype = a.dtype
    scale = np.ones(n, dtype) if scale is None else np.ascontiguousarray(scale, dtype=dtype)
    shift = np.zeros(n, dtype) if shift is None else np.ascontiguousarray(shift, dtype=dtype)
    residual = np.empty((0, 0), dtype) if residual is None else residual
    if out is None:
        out = np.empty((m, n), dtype)
    tasks = _task_count()
    work_ns = m * k * n * NS_PER_MADD
    if _broadcast_is_faster(m, k, n):
        b = np.empty((k, n), dtype)
        gemm.transpose(w, b, work_ns=k * n * 1.0)
        panels = -(-n // gemm.panel_width(dtype))
        if m >= ROW_TASKS_MIN_ROWS or panels < tasks:
            row_block = -(-(-(-m // tasks)) // gemm.MR) * gemm.MR
            panel_group = panels
        else:
            row_block, panel_group = m, -(-panels // tasks)
        gemm.matmul_broadcast(a, b, out, scale, shift, residual, kind, row_block, panel_group, work_ns=work_ns)
    else:
        col_group = -(-(-(-n // tasks)) // gemm.DOT) * gemm.DOT
        gemm.matmul_dot(a, w, out, scale, shift, residual, kind, m, col_group, work_ns=work_ns)
    return out
