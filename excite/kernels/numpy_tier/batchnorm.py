"""NumPy twins of `compiled.batchnorm`: the batch-norm passes over channels-last rows [M, C].

The statistics fill the same per-block float64 partial sums as the kernels (block b holds rows
b * rows_per_block up to the next block), so the caller's reduction over blocks is unchanged.
"""
import numpy as np

from ._activation import activate, activate_grad
from ..activations import IDENTITY

_QUIET = np.errstate(all="ignore")  # like the kernels: no floating-point warnings (inf, NaN in user data)


def _block_rows(m, b, rows_per_block):
    return slice(min(m, b * rows_per_block), min(m, (b + 1) * rows_per_block))


@_QUIET
def channel_sums(x, pivot, partial, rows_per_block):
    """partial[b] = (sum of x - pivot, sum of (x - pivot)**2) per channel over row block b, in float64."""
    m = x.shape[0]
    for b in range(partial.shape[0]):
        d = x[_block_rows(m, b, rows_per_block)].astype(np.float64)
        d -= pivot
        partial[b, 0] = d.sum(axis=0)
        d *= d
        partial[b, 1] = d.sum(axis=0)


def _affine(x, scale, shift):
    z = x * scale
    z += shift
    return z


@_QUIET
def affine_activation_rows(x, scale, shift, out, kind):
    """out[r] = act(x[r] * scale + shift)."""
    z = _affine(x, scale, shift)
    out[...] = z if kind == IDENTITY else activate(z, kind)


@_QUIET
def affine_activation_rows_inplace(x, scale, shift, kind):
    """x[r] = act(x[r] * scale + shift)."""
    x *= scale
    x += shift
    if kind != IDENTITY:
        x[...] = activate(x, kind)


@_QUIET
def backward_sums(grad, x, scale, shift, mean, grad_z, partial, rows_per_block, kind):
    """grad_z = grad * act'(x * scale + shift); partial[b] = (sum grad_z, sum grad_z * (x - mean)) in float64."""
    if kind == IDENTITY:
        grad_z[...] = grad
    else:
        np.multiply(grad, activate_grad(_affine(x, scale, shift), kind), out=grad_z)
    m = x.shape[0]
    for b in range(partial.shape[0]):
        rows = _block_rows(m, b, rows_per_block)
        gz = grad_z[rows].astype(np.float64)
        partial[b, 0] = gz.sum(axis=0)
        centred = x[rows].astype(np.float64)
        centred -= mean
        centred *= gz
        partial[b, 1] = centred.sum(axis=0)


@_QUIET
def backward_input_inplace(grad_z, x, mean, k, mean_grad, coef):
    """grad_z = (grad_z - mean_grad - (x - mean) * k) * coef per channel, in place."""
    grad_z -= mean_grad
    centred = x - mean
    centred *= k
    grad_z -= centred
    grad_z *= coef


@_QUIET
def inference_affine(mean, var, weight, bias, conv_bias, eps, scale, shift):
    """scale = weight / sqrt(var + eps), shift = bias - mean * scale (+ conv_bias * scale), in float64
    and stored in the outputs' dtype; empty ``weight`` / ``bias`` / ``conv_bias`` mean 1 / 0 / 0."""
    s = 1.0 / np.sqrt(np.asarray(var, dtype=np.float64) + eps)
    if weight.size:
        s = s * weight
    t = -np.asarray(mean, dtype=np.float64) * s
    if bias.size:
        t = t + bias
    if conv_bias.size:
        t = t + np.asarray(conv_bias, dtype=np.float64) * s
    scale[...] = s
    shift[...] = t
