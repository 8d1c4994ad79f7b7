"""Compiled per-image channel reductions and gates on channels-last arrays [N, P, C] (P = H*W).

Used by global average pooling and the fused Squeeze-and-Excitation block. Sums run over
pixels in a fixed order in float64, one image per task, so results do not depend on threads.
"""
import numpy as np
from numba import prange

from .threads import kernel


@kernel
def channel_means(x, out):
    """out[n, c] = mean over pixels p of x[n, p, c] (summed in float64)."""
    n_img, pixels, ch = x.shape
    for n in prange(n_img):
        acc = np.zeros(ch, dtype=np.float64)
        for p in range(pixels):
            row = x[n, p]
            for c in range(ch):
                acc[c] += row[c]
        dst = out[n]
        for c in range(ch):
            dst[c] = acc[c] / pixels


@kernel
def gated_sums(grad, x, out):
    """out[n, c] = sum over pixels of grad[n, p, c] * x[n, p, c] (float64)."""
    n_img, pixels, ch = x.shape
    for n in prange(n_img):
        acc = out[n]
        acc[:] = 0
        for p in range(pixels):
            g = grad[n, p]
            row = x[n, p]
            for c in range(ch):
                acc[c] += np.float64(g[c]) * row[c]


@kernel
def gate_backward_input(grad, gate, pooled_grad, out):
    """out[n, p, c] = grad[n, p, c] * gate[n, c] + pooled_grad[n, c] (pooled_grad already divided by P)."""
    n_img, pixels, ch = grad.shape
    for t in prange(n_img * pixels):
        n = t // pixels
        g = grad[n, t % pixels]
        s = gate[n]
        a = pooled_grad[n]
        o = out[n, t % pixels]
        for c in range(ch):
            o[c] = g[c] * s[c] + a[c]
