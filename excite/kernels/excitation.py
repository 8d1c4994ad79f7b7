"""Compiled Squeeze-and-Excitation inference: pool, both 1x1 layers, activations and the gate in one call.

At batch 1 the block's arrays are small and a dozen NumPy calls cost more than the arithmetic;
here the pooling, both layers (the compiled dot-product tiles of `gemm`, bias and activation in
their epilogue) and the gate run in one call. Both memory layouts: channels-last
pixels [N, P, C] or planes [N, C, P].
"""
import numpy as np
from numba import prange

from .channel_reduce import vector_sum
from .gemm import dot_block
from .threads import kernel


@kernel
def se_inference(x, channels_last, w1, b1, w2, b2, kind1, kind2, out):
    """out = x * act2(w2 @ act1(w1 @ mean(x) + b1) + b2) per image.

    ``x`` and ``out`` are [N, P, C] (``channels_last``) or [N, C, P]; ``w1`` is [S, C], ``w2``
    [C, S], ``b1`` [S], ``b2`` [C] (zeros for a layer without bias).
    """
    n_img = x.shape[0]
    if channels_last:
        pixels, ch = x.shape[1], x.shape[2]
    else:
        ch, pixels = x.shape[1], x.shape[2]
    squeeze = w1.shape[0]
    # plain (not literal) integers, so every call below shares one compiled dot_block with matmul_dot
    zero = n_img - n_img
    one = zero + 1
    # one task per image (numba would make each array expression outside a prange a parallel
    # region of its own, so the small copies inside dot_block stay in here)
    for n in prange(n_img):
        pooled = np.empty((1, ch), dtype=x.dtype)
        no_residual = np.empty((0, 0), dtype=x.dtype)
        img = x[n]
        if channels_last:
            sums = np.zeros(ch, dtype=np.float64)
            for p in range(pixels):
                row = img[p]
                for c in range(ch):
                    sums[c] += row[c]
            for c in range(ch):
                pooled[0, c] = sums[c] / pixels
        else:
            for c in range(ch):
                pooled[0, c] = vector_sum(img[c], img[c, :0]) / pixels
        hidden = np.empty((1, squeeze), dtype=x.dtype)
        dot_block(pooled, w1, hidden, np.ones(squeeze, dtype=x.dtype), b1, no_residual, kind1, zero, one, zero,
                  squeeze)
        gate = np.empty((1, ch), dtype=x.dtype)
        dot_block(hidden, w2, gate, np.ones(ch, dtype=x.dtype), b2, no_residual, kind2, zero, one, zero, ch)
        dst = out[n]
        if channels_last:
            for p in range(pixels):
                src = img[p]
                row = dst[p]
                for c in range(ch):
                    row[c] = src[c] * gate[0, c]
        else:
            for c in range(ch):
                src = img[c]
                plane = dst[c]
                g = gate[0, c]
                for p in range(pixels):
                    plane[p] = src[p] * g
