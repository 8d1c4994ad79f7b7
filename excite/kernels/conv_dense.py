"""Dense convolutions (groups == 1): 1x1 as one matrix product, others as the compiled implicit product or im2col."""
import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import buffers, pointwise
from .blas import matmul
from .conv_padding import _pad, _zero_padded
from .layout import is_channels_last, nhwc


# ----- dense 1x1: one matrix product over channels-last pixels -----------------------------
def _strided_pixels(x, stride):
    """[N*OH*OW, C] rows of the pixels a strided 1x1 convolution reads."""
    xc = nhwc(x)
    if stride != (1, 1):
        xc = np.ascontiguousarray(xc[:, ::stride[0], ::stride[1]])
    return xc


def _pointwise_backward_input(grad, x_shape, w, stride):
    n, c, h, wd = x_shape
    o = w.shape[0]
    g = nhwc(grad)
    rows = g.reshape(-1, o)
    if pointwise.supported(rows, w):
        gx = pointwise.input_gradient(rows, w).reshape(g.shape[:3] + (c,))
    else:
        gx = matmul(rows, w.reshape(o, c)).reshape(g.shape[:3] + (c,))
    if stride == (1, 1):
        return gx
    full = buffers.zeros((n, h, wd, c), gx.dtype)
    full[:, ::stride[0], ::stride[1]] = gx
    return full


def _pointwise_backward_weight(grad, x, w_shape, stride):
    o, c = w_shape[:2]
    xc = _strided_pixels(x, stride).reshape(-1, c)
    g = nhwc(grad).reshape(-1, o)
    if pointwise.supported(g, xc):
        return pointwise.weight_gradient(g, xc).reshape(w_shape)
    return matmul(g.T, xc).reshape(w_shape)


# ----- other dense convolutions: channels-last im2col, one image at a time ---------------------
def _padded_nhwc(x, padding):
    xc = nhwc(x)
    ph, pw = padding
    if ph == 0 and pw == 0:
        return xc
    return np.pad(xc, ((0, 0), (ph, ph), (pw, pw), (0, 0)))


def _columns(xp_image, kh, kw, oh, ow, stride, dilation):
    """[OH*OW, KH*KW*C] im2col rows of one padded NHWC image (a copy)."""
    sh, sw, sc = xp_image.strides
    c = xp_image.shape[2]
    win = as_strided(xp_image, (oh, ow, kh, kw, c),
                     (sh * stride[0], sw * stride[1], sh * dilation[0], sw * dilation[1], sc), writeable=False)
    return win.reshape(oh * ow, kh * kw * c)


def _dense_weight_matrix(w):
    """[O, C, KH, KW] -> [O, KH*KW*C] in the column order of `_columns`."""
    return w.transpose(0, 2, 3, 1).reshape(w.shape[0], -1)


def _dense_forward(x, w, stride, padding, dilation, oh, ow):
    """[N, OH, OW, O] with im2col + BLAS (dtypes the compiled implicit product does not cover)."""
    o, c, kh, kw = w.shape
    if not is_channels_last(x):
        return _dense_forward_planar(x, w, stride, padding, dilation, oh, ow)
    xp = _padded_nhwc(x, padding)
    wm = _dense_weight_matrix(w).T
    out = np.empty((x.shape[0], oh, ow, o), dtype=x.dtype)
    for i in range(x.shape[0]):
        matmul(_columns(xp[i], kh, kw, oh, ow, stride, dilation), wm, out=out[i].reshape(oh * ow, o))
    return out


def implicit_dense_applies(x, w):
    return pointwise.supported(x, w)


def _zero_padded_input(x, padding):
    """(flat zero-padded copy of x in its own layout — channels-last, or NCHW for the stem — and the
    element offsets of one image / row / column in it)."""
    ph, pw = padding
    if is_channels_last(x):
        xp = _zero_padded(nhwc(x), ((0, 0), (ph, ph), (pw, pw), (0, 0)))
        sn, sh, sw, _ = (v // x.itemsize for v in xp.strides)
    else:
        xp = _zero_padded(np.ascontiguousarray(x), ((0, 0), (0, 0), (ph, ph), (pw, pw)))
        sn, _, sh, sw = (v // x.itemsize for v in xp.strides)
    return xp.reshape(-1), (sn, sh, sw)


def _tap_offsets(x_shape, kh, kw, padding, dilation, channels_last, rows=None):
    """Each tap's element offset, in (c, i, j) order, in `_zero_padded_input`'s copy of an input of
    ``x_shape`` (NCHW) in that layout, or in a copy of ``rows`` padded rows of it (`dense_bands`)."""
    n, c, h, w = x_shape
    hp, wp = h + 2 * padding[0] if rows is None else rows, w + 2 * padding[1]
    if channels_last:
        sc, sh, sw = 1, wp * c, c
    else:
        sc, sh, sw = hp * wp, wp, 1
    taps = (np.arange(c)[:, None, None] * sc + np.arange(kh)[None, :, None] * (dilation[0] * sh)
            + np.arange(kw)[None, None, :] * (dilation[1] * sw))
    return taps.reshape(-1).astype(np.int64)


DENSE_TASKS = 8  # forward tasks per call at least (bands of output rows when the batch is small)
BAND_BYTES = 1 << 16  # a task's padded copy of the input rows its band reads: at most this (or one band row's)


def dense_bands(x_shape, kh, kw, oh, stride, padding, dilation, channels_last, itemsize):
    """(band, rows, taps) for `gemm.conv_dense`: output rows per task, the input rows a band reads and
    each tap's offset in a task's padded copy of them."""
    n, c, h, w = x_shape
    reach = (kh - 1) * dilation[0] + 1  # input rows one output row reads
    fits = (BAND_BYTES // (c * (w + 2 * padding[1]) * itemsize) - reach) // stride[0] + 1
    band = max(1, min(-(-oh // -(-DENSE_TASKS // max(n, 1))), fits))
    rows = (band - 1) * stride[0] + reach
    return band, rows, _tap_offsets(x_shape, kh, kw, padding, dilation, channels_last, rows)


def dense_input(x, channels_last):
    """``x`` as `gemm.conv_dense` reads it, C-contiguous: [N, C, H, W] (NCHW) or [N, 1, H, W * C]
    (channels-last); a copy where ``x`` is not in that layout."""
    if not channels_last:
        return np.ascontiguousarray(x)
    xc = nhwc(x)
    return xc.reshape(xc.shape[0], 1, xc.shape[1], xc.shape[2] * xc.shape[3])


def _padded_taps(x, w_shape, padding, dilation):
    """(`_zero_padded_input`'s copy and offsets, and each tap's offset in it)."""
    xp, strides = _zero_padded_input(x, padding)
    taps = _tap_offsets(x.shape, w_shape[2], w_shape[3], padding, dilation, is_channels_last(x))
    return xp, strides, taps


def _dense_implicit_backward_weight(grad, x, w_shape, stride, padding, dilation):
    """The weight gradient as one compiled product: the taps of every output pixel gathered (in
    parallel) into rows, then grad.T @ rows over fixed pixel chunks."""
    o, c, kh, kw = w_shape
    g = nhwc(grad)
    n, oh, ow = g.shape[:3]
    xp, (sn, sh, sw), taps = _padded_taps(x, w_shape, padding, dilation)
    rows = buffers.empty((n * oh * ow, c * kh * kw), x.dtype)
    pointwise.gemm.gather_taps(xp, taps, rows, sn, stride[0] * sh, stride[1] * sw, oh, ow, work_ns=rows.size * 0.5)
    return pointwise.weight_gradient(g.reshape(-1, o), rows).reshape(w_shape)


def _dense_forward_planar(x, w, stride, padding, dilation, oh, ow):
    """NCHW input (the stem, fed by the user): one im2col row per (channel, tap), each a strided
    copy of a whole plane, so copies stay long even with 3 channels; the product is channels-last."""
    o, c, kh, kw = w.shape
    ph, pw = padding
    xp = _pad(x, ph, pw)
    cols = np.empty((c, kh, kw, oh, ow), dtype=x.dtype)
    wm = w.reshape(o, c * kh * kw).T
    out = np.empty((x.shape[0], oh, ow, o), dtype=x.dtype)
    for n in range(x.shape[0]):
        for i in range(kh):
            for j in range(kw):
                y0, x0 = i * dilation[0], j * dilation[1]
                cols[:, i, j] = xp[n, :, y0:y0 + stride[0] * (oh - 1) + 1:stride[0],
                                   x0:x0 + stride[1] * (ow - 1) + 1:stride[1]]
        matmul(cols.reshape(c * kh * kw, oh * ow).T, wm, out=out[n].reshape(oh * ow, o))
    return out


def _dense_backward_input(grad, x_shape, w, stride, padding, dilation):
    n, c, h, wd = x_shape
    o, _, kh, kw = w.shape
    g = nhwc(grad)
    oh, ow = g.shape[1:3]
    ph, pw = padding
    wm = _dense_weight_matrix(w)
    gx = np.empty((n, h, wd, c), dtype=g.dtype)
    gxp = np.empty((h + 2 * ph, wd + 2 * pw, c), dtype=g.dtype)
    for img in range(n):
        cols = matmul(g[img].reshape(oh * ow, o), wm).reshape(oh, ow, kh, kw, c)
        gxp[...] = 0
        for i in range(kh):
            for j in range(kw):
                y0, x0 = i * dilation[0], j * dilation[1]
                gxp[y0:y0 + stride[0] * (oh - 1) + 1:stride[0],
                    x0:x0 + stride[1] * (ow - 1) + 1:stride[1]] += cols[:, :, i, j]
        gx[img] = gxp[ph:ph + h, pw:pw + wd]
    return gx


def _dense_backward_weight(grad, x, w_shape, stride, padding, dilation):
    o, c, kh, kw = w_shape
    if implicit_dense_applies(x, grad):
        return _dense_implicit_backward_weight(grad.astype(x.dtype, copy=False), x, w_shape, stride, padding,
                                               dilation)
    g = nhwc(grad)
    oh, ow = g.shape[1:3]
    xp = _padded_nhwc(x, padding)
    total = np.zeros((o, kh * kw * c), dtype=g.dtype)
    for i in range(x.shape[0]):
        total += matmul(g[i].reshape(oh * ow, o).T, _columns(xp[i], kh, kw, oh, ow, stride, dilation))
    return np.ascontiguousarray(total.reshape(o, kh, kw, c).transpose(0, 3, 1, 2))
