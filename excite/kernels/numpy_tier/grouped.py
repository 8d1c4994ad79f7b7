"""NumPy twins of `compiled.grouped`: each group's taps gathered from the zero-padded channels-last input (a
strided view indexed by the tap offsets), then one batched product over the groups.

The packed layouts ([blocks, taps, width, lanes] weights and partial sums, lanes = the last axis) are turned
into plain per-group ones ([G, taps*width, width]) and back; no loop runs over pixels.
"""
import numpy as np

from .gemm import _chunk_bounds, _epilogue, _gather, _gather_rows, _product


def _packed_offsets(toff, groups, width):
    """[G, taps, width] offsets of each packed group's taps: toff[t] + g*width + ci (runs of ``width``
    channels)."""
    toff = np.asarray(toff, dtype=np.int64)
    return ((np.arange(groups, dtype=np.int64) * width)[:, None, None] + toff[None, :, None]
            + np.arange(width, dtype=np.int64)[None, None, :])


def _unpacked_weights(b, groups):
    """[blocks, taps, width, lanes] -> [G, taps*width, width]: w[g, t*width + ci, oo] = b[p, t, ci, j*width + oo]
    for group g = p * (lanes // width) + j."""
    blocks, taps, width, lanes = b.shape
    per_block = lanes // width
    w = b.reshape(blocks, taps, width, per_block, width).transpose(0, 3, 1, 2, 4)
    return np.ascontiguousarray(w.reshape(blocks * per_block, taps * width, width)[:groups])


def grouped_forward_packed(xp, toff, b, out, scale, shift, kind, sn, sh, sw, width):
    """The grouped forward for packed groups of ``width`` channels in and out (``b`` [blocks, taps, width,
    lanes], ``toff`` the taps' spatial offsets in the channels-last ``xp``); the channels are whole groups, as
    every caller has them."""
    groups = out.shape[3] // width
    _product(xp, _packed_offsets(toff, groups, width).reshape(groups, -1), _unpacked_weights(b, groups), out, sn, sh,
            sw)
    _epilogue(out, scale, shift, np.empty((0, 0), out.dtype), kind)


def grouped_forward(xp, koff, b, out, scale, shift, kind, sn, sh, sw, cg):
    """``out[n, oy, ox, g*og + j] = act(sum_k xp[n*sn + oy*sh + ox*sw + g*cg + koff[k]] * b[g, k, j] * scale
    + shift)``."""
    groups = b.shape[0]
    offsets = (np.arange(groups, dtype=np.int64) * cg)[:, None] + np.asarray(koff, dtype=np.int64)[None, :]
    _product(xp, offsets, b, out, sn, sh, sw)
    _epilogue(out, scale, shift, np.empty((0, 0), out.dtype), kind)


def grouped_weight_gradient_packed(xp, toff, grad, partial, sn, sh, sw, oh, ow):
    """``partial[t, p, tap, oo, l]`` = the sum over the output rows of chunk t of ``grad[pixel, p*lanes +
    (l // width)*width + oo] * xp[pixel's offset + toff[tap] + p*lanes + l]``; zero past the last channel (the
    channels are whole groups, as every caller has them)."""
    chunks, blocks, taps, width, lanes = partial.shape
    o = grad.shape[1]
    groups = o // width
    per_block = lanes // width
    offsets = _packed_offsets(toff, groups, width)
    out_rows = grad.shape[0] // ow
    totals = np.zeros((blocks * per_block, taps, width, width), partial.dtype)  # [g, tap, oo, ci]
    for t, (r0, r1) in enumerate(_chunk_bounds(out_rows, chunks)):
        totals[...] = 0
        if r1 > r0:
            total = _chunk_gradient(xp, offsets, grad, r0, r1, sn, sh, sw, oh, ow, width)
            totals[:groups] = total.reshape(groups, width, taps, width).transpose(0, 2, 1, 3)
        # [g = p*per_block + j, tap, oo, ci] -> [p, tap, oo, j*width + ci]
        partial[t] = (totals.reshape(blocks, per_block, taps, width, width).transpose(0, 2, 3, 1, 4)
                      .reshape(blocks, taps, width, lanes))


def _chunk_gradient(xp, offsets, grad, r0, r1, sn, sh, sw, oh, ow, width):
    """[G, width (output channel), taps*width] = the sum over the pixels of output rows r0..r1 of the
    group's output-gradient columns times its gathered taps (``offsets`` [G, taps, width])."""
    groups = offsets.shape[0]
    k = offsets.shape[1] * offsets.shape[2]
    total = np.zeros((groups, width, k), grad.dtype)
    for p0, p1, taps in _gather(xp, offsets, oh, ow, sn, sh, sw, r0, r1):
        g = grad[p0:p1, :groups * width].reshape(p1 - p0, groups, width)
        total += np.matmul(g.transpose(1, 2, 0), taps.reshape(p1 - p0, groups, k).transpose(1, 0, 2))
    return total


def grouped_weight_gradient(grad, rows, partial, k_block):
    """``partial[t, g] = grad[pixels of chunk t, g's outputs].T @ rows[pixels of chunk t, g's taps]``."""
    chunks, groups, og, k = partial.shape
    for t, (p0, p1) in enumerate(_chunk_bounds(grad.shape[0], chunks)):
        if p1 <= p0:
            partial[t] = 0
            continue
        g = grad[p0:p1, :groups * og].reshape(p1 - p0, groups, og).transpose(1, 2, 0)  # [G, og, P]
        x = rows[p0:p1, :groups * k].reshape(p1 - p0, groups, k).transpose(1, 0, 2)  # [G, P, K]
        np.matmul(g, x, out=partial[t])


def gather_group_taps(xp, koff, rows, sn, sh, sw, oh, ow, cg):
    """rows[m, g*K + t] = xp[n*sn + oy*sh + ox*sw + g*cg + koff[t]] for output pixel m = (n, oy, ox)."""
    koff = np.asarray(koff, dtype=np.int64)
    groups = rows.shape[1] // koff.shape[0]
    offsets = ((np.arange(groups, dtype=np.int64) * cg)[:, None] + koff[None, :]).reshape(-1)
    _gather_rows(xp, offsets, rows, sn, sh, sw, oh, ow)
