"""Compiled batch-norm passes over channels-last rows [M, C], fused with the following activation.

Statistics are float64 sums of (x - pivot) and its square per fixed block of rows, added in
block order afterwards: the result does not depend on the thread count. The forward is one
pass (affine map + activation); the backward is one reducing pass (activation grad, the two
channel sums) and one elementwise pass.
"""
import numpy as np
from numba import prange

from .elementwise import affine_activation, affine_activation_inplace, map_activation_grad
from ..threads import helper, kernel


@kernel
def channel_sums(x, pivot, partial, rows_per_block):
    """partial[b] = (sum of x - pivot, sum of (x - pivot)**2) per channel over row block b, in float64."""
    m = x.shape[0]
    for b in prange(partial.shape[0]):
        s1 = partial[b, 0]
        s2 = partial[b, 1]
        s1[:] = 0
        s2[:] = 0
        for r in range(b * rows_per_block, min(m, (b + 1) * rows_per_block)):
            row = x[r]
            for c in range(row.shape[0]):
                d = np.float64(row[c]) - pivot[c]
                s1[c] += d
                s2[c] += d * d


@kernel
def affine_activation_rows(x, scale, shift, out, kind):
    """out[r] = act(x[r] * scale + shift); ``out`` must not overlap ``x`` (see the in-place kernel)."""
    for r in prange(x.shape[0]):
        affine_activation(x[r], scale, shift, out[r], kind)


@kernel
def affine_activation_rows_inplace(x, scale, shift, kind):
    """x[r] = act(x[r] * scale + shift)."""
    for r in prange(x.shape[0]):
        affine_activation_inplace(x[r], scale, shift, kind)


@kernel
def backward_sums(grad, x, scale, shift, mean, grad_z, partial, rows_per_block, kind):
    """grad_z = grad * act'(x * scale + shift); partial[b] = (sum grad_z, sum grad_z * (x - mean)) in float64."""
    m, ch = x.shape
    for b in prange(partial.shape[0]):
        s1 = partial[b, 0]
        s2 = partial[b, 1]
        s1[:] = 0
        s2[:] = 0
        z = np.empty(ch, dtype=x.dtype)
        for r in range(b * rows_per_block, min(m, (b + 1) * rows_per_block)):
            xr = x[r]
            for c in range(ch):
                z[c] = xr[c] * scale[c] + shift[c]
            gz = grad_z[r]
            map_activation_grad(grad[r], z, gz, kind)
            for c in range(ch):
                s1[c] += gz[c]
                s2[c] += np.float64(gz[c]) * (np.float64(xr[c]) - mean[c])


@kernel
def backward_input_inplace(grad_z, x, mean, k, mean_grad, coef):
    """grad_z = (grad_z - mean_grad - (x - mean) * k) * coef per channel, in place."""
    for r in prange(x.shape[0]):
        g = grad_z[r]
        xr = x[r]
        for c in range(xr.shape[0]):
            g[c] = (g[c] - mean_grad[c] - (xr[c] - mean[c]) * k[c]) * coef[c]


@helper
def inference_affine(mean, var, weight, bias, conv_bias, eps, scale, shift):
    """scale = weight / sqrt(var + eps), shift = bias - mean * scale (+ conv_bias * scale), in float64
    and stored in the outputs' dtype; empty ``weight`` / ``bias`` / ``conv_bias`` mean 1 / 0 / 0."""
    for c in range(scale.shape[0]):
        s = 1.0 / np.sqrt(np.float64(var[c]) + eps)
        if weight.size:
            s *= weight[c]
        t = -np.float64(mean[c]) * s
        if bias.size:
            t += bias[c]
        if conv_bias.size:
            t += np.float64(conv_bias[c]) * s
        scale[c] = s
        shift[c] = t
