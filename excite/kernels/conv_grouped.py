"""Grouped convolutions (neither dense nor depthwise): compiled channels-last kernels; other dtypes im2col per group."""
import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import buffers, pointwise
from .activations import IDENTITY
from .conv_padding import _pad, _spread_by_stride, _zero_padded
from .layout import from_nhwc, nhwc
from .threads import LazyModule

grouped = LazyModule("grouped")


# ----- grouped convolutions (neither dense nor depthwise): compiled, channels-last ------------
def _group_padded_taps(x, cg, kh, kw, padding, dilation):
    """(flat zero-padded channels-last copy of x, element offsets of one image / row / column in it,
    and the offsets of one group's taps in (channel, kernel row, kernel column) order)."""
    ph, pw = padding
    xp = _zero_padded(nhwc(x), ((0, 0), (ph, ph), (pw, pw), (0, 0)))
    sn, sh, sw, sc = (v // xp.itemsize for v in xp.strides)
    taps = (np.arange(cg)[:, None, None] * sc + np.arange(kh)[None, :, None] * (dilation[0] * sh)
            + np.arange(kw)[None, None, :] * (dilation[1] * sw))
    return xp.reshape(-1), (sn, sh, sw), taps.reshape(-1).astype(np.int64)


def _packed_weights(w, lanes):
    """[O, W, KH, KW] -> [blocks, KH*KW, W, lanes]: per vector of output channels, per tap and input
    channel of the group, the vector of weights (zeros past the last output channel)."""
    o, width, kh, kw = w.shape
    blocks = -(-o // lanes)
    b = np.zeros((blocks * lanes, kh * kw, width), w.dtype)
    b[:o] = w.reshape(o, width, kh * kw).transpose(0, 2, 1)
    return np.ascontiguousarray(b.reshape(blocks, lanes, kh * kw, width).transpose(0, 2, 3, 1))


def _grouped_weights(w, groups):
    """(packed, weights): the packed tile's [blocks, KH*KW, W, lanes] for groups of 8 or 16 channels in and
    out that divide a vector and fill more than half of it, else each group's transposed weight [G, CG*KH*KW, OG]."""
    o, cg, kh, kw = w.shape
    og = o // groups
    lanes = grouped.VECTOR_BYTES // w.itemsize
    # groups of half a vector or less run faster on half-width vectors (`grouped_forward`) than packed
    if og == cg and cg in grouped.PACKED_WIDTHS and lanes % cg == 0 and 2 * og > lanes:
        return True, _packed_weights(w, lanes)
    b = np.empty((groups, cg * kh * kw, og), w.dtype)
    np.copyto(b, w.reshape(groups, og, cg * kh * kw).transpose(0, 2, 1))
    return False, b


def _grouped_run(x, w_shape, packed, b, stride, padding, dilation, out, scale, shift, kind, work_ns):
    """out [N, OH, OW, O] = act(grouped conv * scale + shift), with `_grouped_weights`' operands."""
    o, cg, kh, kw = w_shape
    xp, (sn, sh, sw), taps = _group_padded_taps(x, 1 if packed else cg, kh, kw, padding, dilation)
    run = grouped.grouped_forward_packed if packed else grouped.grouped_forward
    run(xp, taps, b, out, scale, shift, kind, sn, stride[0] * sh, stride[1] * sw, cg, work_ns=work_ns)
    return out


def grouped_forward_cl(x, w, stride, padding, dilation, groups, oh, ow, scale=None, shift=None, kind=IDENTITY):
    """[N, OH, OW, O] = act(grouped conv * scale + shift) (float32 / float64, ``x`` and ``w`` alike)."""
    n = x.shape[0]
    o, cg, kh, kw = w.shape
    packed, b = _grouped_weights(w, groups)
    scale = np.ones(o, x.dtype) if scale is None else np.ascontiguousarray(scale, dtype=x.dtype)
    shift = np.zeros(o, x.dtype) if shift is None else np.ascontiguousarray(shift, dtype=x.dtype)
    out = buffers.empty((n, oh, ow, o), x.dtype)
    return _grouped_run(x, w.shape, packed, b, stride, padding, dilation, out, scale, shift, kind,
                        out.size * cg * kh * kw * pointwise.NS_PER_MADD)


def _grouped_backward_input_cl(grad, x_shape, w, stride, padding, dilation, groups):
    """[N, H, W, C]: the stride-1 grouped convolution of the (spread-out) gradient with the flipped
    kernel, each group's input and output channels swapped; None where the flipped padding is negative."""
    n, c, h, wd = x_shape
    o, cg, kh, kw = w.shape
    og = o // groups
    flipped_padding = ((kh - 1) * dilation[0] - padding[0], (kw - 1) * dilation[1] - padding[1])
    if min(flipped_padding) < 0:
        return None
    g = _spread_by_stride(grad, (h, wd), (kh, kw), stride, flipped_padding, dilation)
    transposed = w.reshape(groups, og, cg, kh, kw).transpose(0, 2, 1, 3, 4)[..., ::-1, ::-1]
    return grouped_forward_cl(from_nhwc(g), transposed.reshape(groups * cg, og, kh, kw), (1, 1), flipped_padding,
                              dilation, groups, h, wd)


def _grouped_backward_weight_cl(grad, x, w_shape, stride, padding, dilation, groups):
    """Per group, grad.T @ the gathered taps of the group's input channels, summed over fixed pixel chunks."""
    o, cg, kh, kw = w_shape
    og, k = o // groups, cg * kh * kw
    g = nhwc(grad.astype(x.dtype, copy=False))
    n, oh, ow = g.shape[:3]
    lanes = grouped.VECTOR_BYTES // x.itemsize
    if og == cg and cg in grouped.PACKED_WIDTHS and lanes % cg == 0:
        return _packed_backward_weight(g, x, w_shape, stride, padding, dilation, lanes)
    xp, (sn, sh, sw), taps = _group_padded_taps(x, cg, kh, kw, padding, dilation)
    rows = buffers.empty((n * oh * ow, groups * k), x.dtype)
    grouped.gather_group_taps(xp, taps, rows, sn, stride[0] * sh, stride[1] * sw, oh, ow, cg,
                              work_ns=rows.size * 0.5)
    pixels = rows.shape[0]
    chunks = max(1, min(pointwise.GRADIENT_CHUNKS, pixels // 64))
    partial = np.empty((chunks, groups, og, k), x.dtype)
    k_block = max(8, pointwise.GRADIENT_BLOCK_BYTES // ((og + k) * x.itemsize))
    grouped.grouped_weight_gradient(g.reshape(-1, o), rows, partial, k_block,
                                    work_ns=pixels * o * k * pointwise.NS_PER_MADD)
    total = partial[0] if chunks == 1 else partial.sum(axis=0)
    return total.reshape(w_shape)


def _packed_backward_weight(g, x, w_shape, stride, padding, dilation, lanes):
    """The weight gradient of packed groups (`grouped.grouped_weight_gradient_packed`), [O, W, KH, KW]."""
    o, width, kh, kw = w_shape
    n, oh, ow = g.shape[:3]
    xp, (sn, sh, sw), taps = _group_padded_taps(x, 1, kh, kw, padding, dilation)
    blocks = -(-o // lanes)
    chunks = max(1, min(pointwise.GRADIENT_CHUNKS, n * oh // 4))
    partial = np.empty((chunks, blocks, kh * kw, width, lanes), x.dtype)
    grouped.grouped_weight_gradient_packed(xp, taps, g.reshape(-1, o), partial, sn, stride[0] * sh, stride[1] * sw,
                                           oh, ow, work_ns=g.size * width * kh * kw * pointwise.NS_PER_MADD)
    total = partial[0] if chunks == 1 else partial.sum(axis=0)
    # [blocks, taps, oo, group in block, ci] -> [O, ci, taps]
    total = total.reshape(blocks, kh * kw, width, lanes // width, width).transpose(0, 3, 2, 4, 1)
    return np.ascontiguousarray(total.reshape(blocks * lanes, width, kh, kw)[:o])


# ----- grouped convolutions, other dtypes: NCHW im2col per group --------------------------------
def _windows(xp, kh, kw, oh, ow, stride, dilation):
    """View of shape [N, C, KH, KW, OH, OW] over the padded input (no copy)."""
    sn, sc, sh, sw = xp.strides
    n, c = xp.shape[:2]
    return as_strided(
        xp,
        shape=(n, c, kh, kw, oh, ow),
        strides=(sn, sc, sh * dilation[0], sw * dilation[1], sh * stride[0], sw * stride[1]),
        writeable=False,
    )


def _grouped_forward(x, w, stride, padding, dilation, groups, oh, ow):
    n = x.shape[0]
    o, cg, kh, kw = w.shape
    win = _windows(_pad(x, *padding), kh, kw, oh, ow, stride, dilation)
    og = o // groups
    out = np.empty((n, o, oh * ow), dtype=x.dtype)
    for g in range(groups):
        cols = win[:, g * cg:(g + 1) * cg].reshape(n, cg * kh * kw, oh * ow)
        np.matmul(w[g * og:(g + 1) * og].reshape(og, cg * kh * kw), cols, out=out[:, g * og:(g + 1) * og])
    return out.reshape(n, o, oh, ow)


def _grouped_backward_input(grad, x_shape, w, stride, padding, dilation, groups):
    n, c, h, wd = x_shape
    o, cg, kh, kw = w.shape
    oh, ow = grad.shape[2:]
    ph, pw = padding
    gxp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw), dtype=grad.dtype)
    og = o // groups
    g2 = grad.reshape(n, o, oh * ow)
    for g in range(groups):
        wg = w[g * og:(g + 1) * og].reshape(og, cg * kh * kw)
        cols = np.matmul(wg.T, g2[:, g * og:(g + 1) * og]).reshape(n, cg, kh, kw, oh, ow)
        dst = gxp[:, g * cg:(g + 1) * cg]
        for i in range(kh):
            for j in range(kw):
                hs, ws = i * dilation[0], j * dilation[1]
                dst[:, :, hs:hs + stride[0] * (oh - 1) + 1:stride[0],
                    ws:ws + stride[1] * (ow - 1) + 1:stride[1]] += cols[:, :, i, j]
    return gxp[:, :, ph:ph + h, pw:pw + wd]


def _grouped_backward_weight(grad, x, w_shape, stride, padding, dilation, groups):
    n = x.shape[0]
    o, cg, kh, kw = w_shape
    oh, ow = grad.shape[2:]
    win = _windows(_pad(x, *padding), kh, kw, oh, ow, stride, dilation)
    og = o // groups
    out = np.empty(w_shape, dtype=grad.dtype)
    for g in range(groups):
        cols = win[:, g * cg:(g + 1) * cg].reshape(n, cg * kh * kw, oh * ow)
        gg = grad[:, g * og:(g + 1) * og].reshape(n, og, oh * ow)
        out[g * og:(g + 1) * og] = np.tensordot(gg, cols, axes=([0, 2], [0, 2])).reshape(og, cg, kh, kw)
    return out
