"""Layer normalisation on arrays (over the last dims of each sample): forward and backward, in NumPy."""
import numpy as np


def _rows(x, normalized_ndim):
    """``x`` as [M, N] rows: N the product of the last ``normalized_ndim`` dims (a view when contiguous)."""
    n = int(np.prod(x.shape[x.ndim - normalized_ndim:]))
    return np.ascontiguousarray(x).reshape(-1, n)


def layer_norm_forward(x, normalized_ndim, weight, bias, eps):
    """(y, mean, rstd): ``y = (x - mean) * rstd * weight + bias`` per row, rstd = 1 / sqrt(biased var + eps).

    ``weight`` / ``bias`` have the normalised shape or are None; mean and rstd are [M, 1] float64 (the
    statistics of rows of 64-768 values: accumulated in float64, as torch accumulates in its opmath type).
    """
    rows = _rows(x, normalized_ndim)
    wide = rows.astype(np.float64)
    mean = wide.mean(axis=1, keepdims=True)
    centred = wide - mean
    rstd = 1.0 / np.sqrt(np.mean(centred * centred, axis=1, keepdims=True) + eps)
    y = (centred * rstd).astype(x.dtype)
    if weight is not None:
        y *= weight.reshape(-1)
    if bias is not None:
        y += bias.reshape(-1)
    return y.reshape(x.shape), mean, rstd


def layer_norm_backward(grad, x, mean, rstd, normalized_ndim, weight, need_weight, need_bias):
    """(grad x, grad weight or None, grad bias or None) of `layer_norm_forward`.

    With xhat the normalised rows and gh = grad * weight: grad x = rstd * (gh - mean(gh) - xhat * mean(gh * xhat)).
    """
    rows = _rows(x, normalized_ndim).astype(np.float64)
    g = _rows(grad, normalized_ndim).astype(np.float64)
    xhat = (rows - mean) * rstd
    gh = g * weight.reshape(-1) if weight is not None else g
    gx = rstd * (gh - gh.mean(axis=1, keepdims=True) - xhat * (gh * xhat).mean(axis=1, keepdims=True))
    shape = x.shape[x.ndim - normalized_ndim:]
    gw = (g * xhat).sum(axis=0).reshape(shape).astype(x.dtype) if need_weight else None
    gb = g.sum(axis=0).reshape(shape).astype(x.dtype) if need_bias else None
    return gx.astype(x.dtype).reshape(x.shape), gw, gb
