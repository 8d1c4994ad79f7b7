"""NumPy twins of `compiled.depthwise_cl`: depthwise conv2d on channels-last [N, H, W, C], weights [KH, KW, C].

One pass per kernel tap over a strided view of a zero-padded copy of the input (or, backward, of
a zero-padded gradient buffer): a multiply-add of whole [images, OH, OW, C] blocks, no loop over
pixels. Images go in groups of about CHUNK_ELEMENTS outputs, so each tap's pass stays in cache.
"""
import numpy as np

from ._activation import activate
from ..activations import IDENTITY

_QUIET = np.errstate(all="ignore")  # like the kernels: no floating-point warnings (inf, NaN in user data)

CHUNK_ELEMENTS = 1 << 18


def _chunks(n, per_image):
    """Slices of the n images, each of about CHUNK_ELEMENTS elements (at least one image)."""
    step = max(1, CHUNK_ELEMENTS // max(1, per_image))
    return [slice(i, min(n, i + step)) for i in range(0, n, step)]


def _padded(x, top, left, rows, cols):
    """[N, rows', cols', C] zeros with x at [top:, left:], at least ``rows`` x ``cols`` and x's extent."""
    n, h, wd, c = x.shape
    buf = np.zeros((n, max(rows, top + h), max(cols, left + wd), c), dtype=x.dtype)
    buf[:, top:top + h, left:left + wd] = x
    return buf


def _extent(out_size, kernel, stride, dilation):
    """Rows (or columns) of padded input the taps of ``out_size`` outputs reach."""
    return (kernel - 1) * dilation + (out_size - 1) * stride + 1


def _tap(buf, i, j, oh, ow, sh, sw, dh, dw):
    """The [N, OH, OW, C] view of ``buf`` that kernel tap (i, j) reads (or, backward, writes)."""
    y0, x0 = i * dh, j * dw
    return buf[:, y0:y0 + (oh - 1) * sh + 1:sh, x0:x0 + (ow - 1) * sw + 1:sw]


@_QUIET
def depthwise_forward_cl(x, w, bias, scale, shift, kind, out, sh, sw, ph, pw, dh, dw, band):
    """out[n, oy, ox, c] = act(conv * scale[c] + shift[c]) where conv = bias[c] + sum_ij w[i, j, c] * x[...];
    ``x[n, oy*sh - ph + i*dh, ox*sw - pw + j*dw, c]`` is the tap (zero outside), empty ``scale`` skips the
    map; ``band`` (the compiled kernel's task size) does not change the result."""
    kh, kw = w.shape[0], w.shape[1]
    oh, ow = out.shape[1], out.shape[2]
    if oh == 0 or ow == 0 or out.shape[0] == 0:
        return
    for images in _chunks(out.shape[0], out[0].size):
        xp = _padded(x[images], ph, pw, _extent(oh, kh, sh, dh), _extent(ow, kw, sw, dw))
        acc = out[images]
        acc[...] = bias
        product = np.empty_like(acc)
        for i in range(kh):
            for j in range(kw):
                np.multiply(_tap(xp, i, j, oh, ow, sh, sw, dh, dw), w[i, j], out=product)
                acc += product
        if scale.size:
            acc *= scale
            acc += shift
        if kind != IDENTITY:
            acc[...] = activate(acc, kind)


@_QUIET
def depthwise_backward_input_cl(grad, w, grad_x, sh, sw, ph, pw, dh, dw):
    """grad_x[n, iy, ix, c] = sum over the taps and outputs that read x[n, iy, ix, c]."""
    n, h, wd, c = grad_x.shape
    kh, kw = w.shape[0], w.shape[1]
    oh, ow = grad.shape[1], grad.shape[2]
    if oh == 0 or ow == 0:
        grad_x[...] = 0
        return
    rows, cols = max(ph + h, _extent(oh, kh, sh, dh)), max(pw + wd, _extent(ow, kw, sw, dw))
    for images in _chunks(n, grad[0].size):
        g = grad[images]
        buf = np.zeros((g.shape[0], rows, cols, c), dtype=grad_x.dtype)
        product = np.empty(g.shape, dtype=grad_x.dtype)
        for i in range(kh):
            for j in range(kw):
                np.multiply(g, w[i, j], out=product)
                _tap(buf, i, j, oh, ow, sh, sw, dh, dw)[...] += product
        grad_x[images] = buf[:, ph:ph + h, pw:pw + wd]


@_QUIET
def depthwise_backward_weight_cl(grad, x, partial, sh, sw, ph, pw, dh, dw):
    """partial[n, i, j, c] = sum over outputs of image n of grad * the input tap (rows summed in x's
    dtype, their totals in partial's)."""
    kh, kw = partial.shape[1], partial.shape[2]
    oh, ow = grad.shape[1], grad.shape[2]
    if oh == 0 or ow == 0:
        partial[...] = 0
        return
    for images in _chunks(x.shape[0], grad[0].size):
        xp = _padded(x[images], ph, pw, _extent(oh, kh, sh, dh), _extent(ow, kw, sw, dw))
        g = grad[images]
        product = np.empty(g.shape, dtype=x.dtype)
        for i in range(kh):
            for j in range(kw):
                np.multiply(g, _tap(xp, i, j, oh, ow, sh, sw, dh, dw), out=product)
                partial[images, i, j] = product.sum(axis=2).sum(axis=1, dtype=partial.dtype)
