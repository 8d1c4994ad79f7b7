"""Compiled per-image channel reductions and gates on channels-last arrays [N, P, C] (P = H*W) or planes [N, C, P].

Used by global average pooling and the fused Squeeze-and-Excitation block. Sums run over
pixels in a fixed order in float64, one image per task, so results do not depend on threads.
"""
import numpy as np
from numba import prange

from .activation_math import activate
from ..threads import inline_helper, kernel



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
def se_inference_cl(x, w1t, b1, w2t, b2, out, kind1, kind2):
    """The whole Squeeze-and-Excitation block of each image in one task: ``out[n, p, c] = x[n, p, c] *
    act2(b2 + act1(b1 + mean_p(x[n]) @ w1t) @ w2t)[c]``, the mean summed in float64 as `channel_means`,
    both layers summed in float64, ``w1t`` [C, S] and ``w2t`` [S, C] the transposed layers (rows contiguous: each layer is a sum of
    scaled weight rows, which vectorises). At batch 1 this replaces four kernel calls and their
    launches by one."""
    n_img, pixels, ch = x.shape
    squeeze = w1t.shape[1]
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
        # both layers summed in float64 (thousands of channels in the widest networks), then rounded
        hidden64 = np.zeros(squeeze, dtype=np.float64)
        for c in range(ch):
            mean = np.float64(x.dtype.type(acc[c] / pixels))
            row = w1t[c]
            for s in range(squeeze):
                hidden64[s] += np.float64(row[s]) * mean
        hidden = np.empty(squeeze, dtype=x.dtype)
        for s in range(squeeze):
            hidden[s] = activate(x.dtype.type(hidden64[s] + b1[s]), kind1)
        gate64 = np.zeros(ch, dtype=np.float64)
        for s in range(squeeze):
            h = np.float64(hidden[s])
            row = w2t[s]
            for c in range(ch):
                gate64[c] += np.float64(row[c]) * h
        gate = np.empty(ch, dtype=x.dtype)
        for c in range(ch):
            gate[c] = activate(x.dtype.type(gate64[c] + b2[c]), kind2)
        dst = out[n]
        for p in range(pixels):
            src = img[p]
            o = dst[p]
            for c in range(ch):
                o[c] = src[c] * gate[c]


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


# ----- the same reductions and gates on planes [N, C, P] (NCHW memory) ----------------------------
@inline_helper
def vector_sum(a, b):
    """sum over p of a[p] (b empty) or a[p] * b[p], in float64: eight running sums (independent add
    chains the compiler packs into one vector register), then their total."""
    n = a.shape[0]
    s0 = s1 = s2 = s3 = s4 = s5 = s6 = s7 = 0.0
    p = 0
    if b.size:
        while p + 8 <= n:
            s0 += np.float64(a[p]) * b[p]
            s1 += np.float64(a[p + 1]) * b[p + 1]
            s2 += np.float64(a[p + 2]) * b[p + 2]
            s3 += np.float64(a[p + 3]) * b[p + 3]
            s4 += np.float64(a[p + 4]) * b[p + 4]
            s5 += np.float64(a[p + 5]) * b[p + 5]
            s6 += np.float64(a[p + 6]) * b[p + 6]
            s7 += np.float64(a[p + 7]) * b[p + 7]
            p += 8
        while p < n:
            s0 += np.float64(a[p]) * b[p]
            p += 1
    else:
        while p + 8 <= n:
            s0 += a[p]
            s1 += a[p + 1]
            s2 += a[p + 2]
            s3 += a[p + 3]
            s4 += a[p + 4]
            s5 += a[p + 5]
            s6 += a[p + 6]
            s7 += a[p + 7]
            p += 8
        while p < n:
            s0 += a[p]
            p += 1
    return ((s0 + s1) + (s2 + s3)) + ((s4 + s5) + (s6 + s7))


@kernel
def plane_means(x, out):
    """out[n, c] = mean over p of x[n, c, p] (summed in float64)."""
    n_img, ch, pixels = x.shape
    none = x[0, 0, :0]
    for t in prange(n_img * ch):
        out[t // ch, t % ch] = vector_sum(x[t // ch, t % ch], none) / pixels


@kernel
def plane_gate(x, gate, out):
    """out[n, c, p] = x[n, c, p] * gate[n, c]."""
    n_img, ch, pixels = x.shape
    for t in prange(n_img * ch):
        src = x[t // ch, t % ch]
        dst = out[t // ch, t % ch]
        s = gate[t // ch, t % ch]
        for p in range(pixels):
            dst[p] = src[p] * s


@kernel
def plane_gated_sums(grad, x, out):
    """out[n, c] = sum over p of grad[n, c, p] * x[n, c, p] (float64)."""
    n_img, ch = x.shape[:2]
    for t in prange(n_img * ch):
        out[t // ch, t % ch] = vector_sum(grad[t // ch, t % ch], x[t // ch, t % ch])


@kernel
def plane_gate_backward_input(grad, gate, pooled_grad, out):
    """out[n, c, p] = grad[n, c, p] * gate[n, c] + pooled_grad[n, c] (pooled_grad already divided by P)."""
    n_img, ch, pixels = grad.shape
    for t in prange(n_img * ch):
        g = grad[t // ch, t % ch]
        dst = out[t // ch, t % ch]
        s = gate[t // ch, t % ch]
        a = pooled_grad[t // ch, t % ch]
        for p in range(pixels):
            dst[p] = g[p] * s + a
