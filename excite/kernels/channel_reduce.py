"""Compiled per-image channel reductions and gates on channels-last arrays [N, P, C] (P = H*W).

Used by global average pooling and the fused Squeeze-and-Excitation block. Sums run over
pixels in a fixed order in float64, one image per task, so results do not depend on threads.
"""
import numpy as np
from numba import prange

from .threads import kernel


@kernel
def channel_means(x, out):
    """out[n, c] = mean over pixels p of x[n, p, c] (summed in float64, four pixels per step)."""
    n_img, pixels, ch = x.shape
    for n in prange(n_img):
        acc = np.zeros(ch, dtype=np.float64)
        img = x[n]
        p = 0
        while p + 4 <= pixels:
            for c in range(ch):
                acc[c] += (np.float64(img[p, c]) + img[p + 1, c]) + (np.float64(img[p + 2, c]) + img[p + 3, c])
            p += 4
        while p < pixels:
            for c in range(ch):
                acc[c] += img[p, c]
            p += 1
        dst = out[n]
        for c in range(ch):
            dst[c] = acc[c] / pixels


@kernel
def gate_forward(x, gate, out):
    """out[n, p, c] = x[n, p, c] * gate[n, c]."""
    n_img, pixels, ch = x.shape
    for t in prange(n_img * pixels):
        n = t // pixels
        src = x[n, t % pixels]
        s = gate[n]
        o = out[n, t % pixels]
        for c in range(ch):
            o[c] = src[c] * s[c]


@kernel
def gated_sums(grad, x, out):
    """out[n, c] = sum over pixels of grad[n, p, c] * x[n, p, c] (float64)."""
    n_img, pixels, ch = x.shape
    for n in prange(n_img):
        acc = out[n]
        acc[:] = 0
        g = grad[n]
        img = x[n]
        p = 0
        while p + 2 <= pixels:
            for c in range(ch):
                acc[c] += np.float64(g[p, c]) * img[p, c] + np.float64(g[p + 1, c]) * img[p + 1, c]
            p += 2
        while p < pixels:
            for c in range(ch):
                acc[c] += np.float64(g[p, c]) * img[p, c]
            p += 1


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
