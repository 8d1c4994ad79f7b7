"""Batch-normalisation kernels over axis 1 (channels) of [N, C] or [N, C, ...] arrays, fused with an activation.

The normalisation is always the affine map ``y = act(x * scale + shift)`` per channel, with
``scale = weight / sqrt(var + eps)`` and ``shift = bias - mean * scale`` (torch's CPU kernel
does the same), from batch statistics when training and running statistics in eval.
Channels-last 4-D arrays and C-contiguous 2-D arrays ("rows": channels innermost) use the
compiled passes of `batchnorm`; other layouts use NumPy.
"""
import numpy as np

from . import activation as A
from . import activations, buffers
from .layout import like
from .threads import LazyModule, call_helper, compiled_worthwhile

batchnorm = LazyModule("batchnorm")  # compiled kernels: numba loads on first use

ROWS_PER_BLOCK_ELEMENTS = 1 << 15  # statistics are summed per block of about this many elements


def _axes(x):
    return (0,) + tuple(range(2, x.ndim))


def _per_channel(v, ndim):
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def _rows(x, activation=None):
    """[M, C] C-contiguous view with channels innermost, or None if the layout (or an activation the
    compiled kernels do not hold) does not allow it."""
    if not compiled_worthwhile(x, "batch_norm") or not activations.compiled(activation):
        return None
    if x.ndim == 2 and x.flags.c_contiguous:
        return x
    if x.ndim == 4 and x.transpose(0, 2, 3, 1).flags.c_contiguous:
        return x.transpose(0, 2, 3, 1).reshape(-1, x.shape[1])
    return None


def _kind(activation):
    return activations.code(activation)


def _blocks(m, c):
    rows = max(1, ROWS_PER_BLOCK_ELEMENTS // c)
    return rows, -(-m // rows)


# ----- statistics and the affine map -----------------------------------------------------------
def batch_norm_statistics(x):
    """Per-channel batch mean and biased variance, in float64."""
    rows = _rows(x)
    if rows is None:
        x64 = x.astype(np.float64, copy=False)
        mean = x64.mean(axis=_axes(x))
        centered = x64 - _per_channel(mean, x.ndim)
        return mean, np.mean(centered * centered, axis=_axes(x))
    m, c = rows.shape
    pivot = rows[0].astype(np.float64)  # summing x - pivot avoids cancellation when |mean| >> std
    per_block, n_blocks = _blocks(m, c)
    partial = np.empty((n_blocks, 2, c), dtype=np.float64)
    batchnorm.channel_sums(rows, pivot, partial, per_block, work_ns=rows.size * 0.4)
    s1, s2 = partial.sum(axis=0) / m
    return pivot + s1, np.maximum(s2 - s1 * s1, 0.0)


def batch_norm_affine(mean, var, weight, bias, eps):
    """(scale, shift, invstd) in float64 for ``y = x * scale + shift``."""
    invstd = 1.0 / np.sqrt(np.asarray(var, dtype=np.float64) + eps)
    scale = invstd if weight is None else invstd * weight
    shift = -mean * scale if bias is None else bias - mean * scale
    return scale, shift, invstd


_EMPTY = {}


def _empty(dtype):
    arr = _EMPTY.get(dtype)
    if arr is None:
        arr = _EMPTY[dtype] = np.empty(0, dtype)
    return arr


def inference_affine(mean, var, weight, bias, eps, conv_bias=None, dtype=None):
    """`batch_norm_affine`'s (scale, shift) for running statistics, with a preceding convolution's bias
    folded into ``shift``, in ``dtype`` (default the statistics'): one compiled call, as eval-mode
    inference pays this on every forward."""
    dtype = np.dtype(mean.dtype if dtype is None else dtype)
    channels = mean.shape[0]
    scale = np.empty(channels, dtype)
    shift = np.empty(channels, dtype)
    call_helper(batchnorm, "inference_affine", mean, var, _empty(mean.dtype) if weight is None else weight,
                _empty(mean.dtype) if bias is None else bias, _empty(mean.dtype) if conv_bias is None else conv_bias,
                float(eps), scale, shift)
    return scale, shift


def batch_norm_apply(x, scale, shift, activation=None, out=None):
    """act(x * scale + shift) per channel, in x's layout; ``out`` (x's layout, may be x) receives it."""
    rows = _rows(x, activation)
    scale = np.ascontiguousarray(scale, dtype=x.dtype)
    shift = np.ascontiguousarray(shift, dtype=x.dtype)
    if rows is None:
        y = x * _per_channel(scale, x.ndim) + _per_channel(shift, x.ndim)
        y = A.forward(y, activation, out=y)
        if out is None:
            return y
        out[...] = y
        return out
    if out is x:
        batchnorm.affine_activation_rows_inplace(rows, scale, shift, _kind(activation), work_ns=rows.size * 0.6)
        return out
    if out is None:
        out = buffers.empty_like(x)
    batchnorm.affine_activation_rows(rows, scale, shift, _rows(out), _kind(activation), work_ns=rows.size * 0.6)
    return out


# ----- the classic entry points (plain batch norm, no activation) --------------------------------
def batch_norm_train(x, weight, bias, eps, activation=None):
    """Normalise with batch statistics. Returns (y, mean, biased var, scale, shift, invstd)."""
    mean, var = batch_norm_statistics(x)
    scale, shift, invstd = batch_norm_affine(mean, var, weight, bias, eps)
    return batch_norm_apply(x, scale, shift, activation), mean, var, scale, shift, invstd


def batch_norm_eval(x, running_mean, running_var, weight, bias, eps, activation=None):
    """Normalise with running statistics. Returns (y, scale, shift, invstd)."""
    scale, shift, invstd = batch_norm_affine(running_mean, running_var, weight, bias, eps)
    return batch_norm_apply(x, scale, shift, activation), scale, shift, invstd


def batch_norm_update_stats(running_mean, running_var, mean, var, count, momentum):
    """torch's update: running_var takes the unbiased variance."""
    unbiased = var * (count / max(count - 1, 1))
    running_mean *= 1 - momentum
    running_mean += (momentum * mean).astype(running_mean.dtype, copy=False)
    running_var *= 1 - momentum
    running_var += (momentum * unbiased).astype(running_var.dtype, copy=False)


# ----- backward --------------------------------------------------------------------------------
def batch_norm_backward(grad, x, scale, shift, mean, invstd, weight, training, activation=None):
    """Gradients (x, weight, bias) of ``act(x * scale + shift)``.

    ``mean`` is the batch mean when ``training`` (its dependence on x is differentiated too),
    else the running mean.
    """
    m = x.size // x.shape[1]
    rows = _rows(x, activation)
    coef = invstd if weight is None else invstd * weight
    if rows is not None:
        gx, s1, s2 = _backward_compiled(grad, x, rows, scale, shift, mean, activation)
    else:
        z = x * _per_channel(scale.astype(x.dtype), x.ndim) + _per_channel(shift.astype(x.dtype), x.ndim)
        record = activations.get(activation)
        gz = grad if record is None else A.derivative_times(grad, z, record)
        axes = _axes(x)
        s1 = gz.sum(axis=axes, dtype=np.float64)
        s2 = (gz * (x - _per_channel(mean.astype(x.dtype), x.ndim))).sum(axis=axes, dtype=np.float64)
        gx = gz
    grad_bias = s1.astype(x.dtype)
    grad_weight = (s2 * invstd).astype(x.dtype)
    if training:
        mean_grad = s1 / m
        k = s2 * invstd * invstd / m
    else:
        mean_grad = np.zeros_like(s1)
        k = mean_grad
    if rows is not None:
        gz_rows = _rows(gx)
        cast = [np.ascontiguousarray(v, dtype=x.dtype) for v in (mean, k, mean_grad, coef)]
        batchnorm.backward_input_inplace(gz_rows, rows, *cast, work_ns=rows.size * 0.5)
    else:
        p = [_per_channel(v.astype(x.dtype), x.ndim) for v in (mean, k, mean_grad, coef)]
        gx = (gz - p[2] - (x - p[0]) * p[1]) * p[3]
    return gx, grad_weight, grad_bias


def _backward_compiled(grad, x, rows, scale, shift, mean, activation):

    m, c = rows.shape
    grad = like(grad.astype(x.dtype, copy=False), x)
    gz = buffers.empty_like(x)
    per_block, n_blocks = _blocks(m, c)
    partial = np.empty((n_blocks, 2, c), dtype=np.float64)
    batchnorm.backward_sums(_rows(grad), rows, np.ascontiguousarray(scale, dtype=x.dtype),
                            np.ascontiguousarray(shift, dtype=x.dtype), np.ascontiguousarray(mean, dtype=np.float64),
                            _rows(gz), partial, per_block, _kind(activation), work_ns=rows.size * 1.0)
    s1, s2 = partial.sum(axis=0)
    return gz, s1, s2
