"""Batch-normalisation kernels over axis 1 (channels) of [N, C] or [N, C, H, W] arrays."""
import numpy as np


def _axes(x):
    return (0,) + tuple(range(2, x.ndim))


def _per_channel(v, ndim):
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def batch_norm_train(x, weight, bias, eps):
    """Normalise with batch statistics. Returns (y, mean, biased var, invstd, xhat)."""
    axes = _axes(x)
    mean = x.mean(axis=axes)
    centered = x - _per_channel(mean, x.ndim)
    var = np.mean(centered * centered, axis=axes)
    invstd = 1.0 / np.sqrt(var + eps)
    xhat = centered * _per_channel(invstd.astype(x.dtype, copy=False), x.ndim)
    y = xhat if weight is None else xhat * _per_channel(weight, x.ndim)
    if bias is not None:
        y = y + _per_channel(bias, x.ndim)
    return y, mean, var, invstd, xhat


def batch_norm_update_stats(running_mean, running_var, mean, var, count, momentum):
    """torch's update: running_var takes the unbiased variance."""
    unbiased = var * (count / max(count - 1, 1))
    running_mean *= 1 - momentum
    running_mean += momentum * mean
    running_var *= 1 - momentum
    running_var += momentum * unbiased


def batch_norm_train_backward(grad, xhat, invstd, weight):
    axes = _axes(grad)
    m = grad.size // grad.shape[1]
    gbias = grad.sum(axis=axes)
    gweight = (grad * xhat).sum(axis=axes)
    scale = invstd if weight is None else invstd * weight
    gx = _per_channel((scale / m).astype(grad.dtype, copy=False), grad.ndim) * (
        m * grad - _per_channel(gbias, grad.ndim) - xhat * _per_channel(gweight, grad.ndim))
    return gx, gweight, gbias


def batch_norm_eval(x, running_mean, running_var, weight, bias, eps):
    invstd = 1.0 / np.sqrt(running_var + eps)
    scale = invstd if weight is None else invstd * weight
    shift = -running_mean * scale if bias is None else bias - running_mean * scale
    y = x * _per_channel(scale.astype(x.dtype, copy=False), x.ndim) + _per_channel(shift.astype(x.dtype, copy=False), x.ndim)
    return y, invstd


def batch_norm_eval_backward(grad, x, running_mean, invstd, weight):
    axes = _axes(grad)
    scale = invstd if weight is None else invstd * weight
    gx = grad * _per_channel(scale.astype(grad.dtype, copy=False), grad.ndim)
    xhat = (x - _per_channel(running_mean, x.ndim)) * _per_channel(invstd, x.ndim)
    return gx, (grad * xhat).sum(axis=axes), grad.sum(axis=axes)
