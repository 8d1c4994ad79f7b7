"""Pooling kernels (NCHW) on plain arrays, forward and backward."""
import numpy as np
from numpy.lib.stride_tricks import as_strided

from . import buffers

from .layout import empty_nhwc, is_channels_last
from .threads import LazyModule, compiled_worthwhile

channel_reduce = LazyModule("channel_reduce")  # compiled kernels: numba loads on first use


def _bounds(size, out):
    """torch's adaptive pooling windows: [floor(i*size/out), ceil((i+1)*size/out))."""
    starts = [(i * size) // out for i in range(out)]
    ends = [-((-(i + 1) * size) // out) for i in range(out)]
    return starts, ends


def global_avg_pool2d(x):
    """Mean over H and W as [N, C, 1, 1]; large channels-last inputs use a compiled float64-accumulating
    pass, small ones (a classifier's pool at batch 1) NumPy's pairwise sums over the pixel rows."""
    n, c, h, w = x.shape
    if is_channels_last(x) and x.dtype in (np.float32, np.float64):
        pixels = x.transpose(0, 2, 3, 1).reshape(n, h * w, c)
        if not compiled_worthwhile(x, "global_pool"):
            return pixels.mean(axis=1).reshape(n, c, 1, 1)
        out = np.empty((n, c), dtype=x.dtype)
        channel_reduce.channel_means(pixels, out, work_ns=x.size * 0.3)
        return out.reshape(n, c, 1, 1)
    return x.mean(axis=(2, 3), keepdims=True)


def adaptive_avg_pool2d(x, output_size):
    n, c, h, w = x.shape
    oh, ow = output_size
    if oh == 1 and ow == 1:
        return global_avg_pool2d(x)
    if h % oh == 0 and w % ow == 0:
        return x.reshape(n, c, oh, h // oh, ow, w // ow).mean(axis=(3, 5))
    hs, he = _bounds(h, oh)
    ws, we = _bounds(w, ow)
    out = np.empty((n, c, oh, ow), dtype=x.dtype)
    for i in range(oh):
        for j in range(ow):
            out[:, :, i, j] = x[:, :, hs[i]:he[i], ws[j]:we[j]].mean(axis=(2, 3))
    return out


def adaptive_avg_pool2d_backward(grad, x_shape, channels_last=False):
    n, c, h, w = x_shape
    oh, ow = grad.shape[2:]
    if oh == 1 and ow == 1:
        gx = empty_nhwc(n, c, h, w, grad.dtype) if channels_last else buffers.empty(x_shape, grad.dtype)
        gx[...] = grad / (h * w)
        return gx
    if h % oh == 0 and w % ow == 0:
        kh, kw = h // oh, w // ow
        g = grad.reshape(n, c, oh, 1, ow, 1) / (kh * kw)
        return np.broadcast_to(g, (n, c, oh, kh, ow, kw)).reshape(x_shape).copy()
    hs, he = _bounds(h, oh)
    ws, we = _bounds(w, ow)
    gx = np.zeros(x_shape, dtype=grad.dtype)
    for i in range(oh):
        for j in range(ow):
            area = (he[i] - hs[i]) * (we[j] - ws[j])
            gx[:, :, hs[i]:he[i], ws[j]:we[j]] += grad[:, :, i:i + 1, j:j + 1] / area
    return gx


def pool_output_size(size, kernel, stride, padding, dilation, ceil_mode):
    eff = dilation * (kernel - 1) + 1
    num = size + 2 * padding - eff
    out = (-(-num // stride) if ceil_mode else num // stride) + 1
    if ceil_mode and (out - 1) * stride >= size + padding:
        out -= 1  # the last window must start inside the input or the left padding
    return out


def _windows(xp, kh, kw, oh, ow, stride, dilation):
    sn, sc, sh, sw = xp.strides
    n, c = xp.shape[:2]
    return as_strided(xp, (n, c, oh, ow, kh, kw),
                      (sn, sc, sh * stride[0], sw * stride[1], sh * dilation[0], sw * dilation[1]),
                      writeable=False)


def _padded(x, padding, oh, ow, kernel, stride, dilation, value):
    """Pad with ``value`` on the left by ``padding`` and on the right as far as windows reach."""
    n, c, h, w = x.shape
    need_h = (oh - 1) * stride[0] + dilation[0] * (kernel[0] - 1) + 1
    need_w = (ow - 1) * stride[1] + dilation[1] * (kernel[1] - 1) + 1
    ph_r = max(0, need_h - h - padding[0])
    pw_r = max(0, need_w - w - padding[1])
    if padding == (0, 0) and ph_r == 0 and pw_r == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (padding[0], ph_r), (padding[1], pw_r)), constant_values=value)


def max_pool2d(x, kernel, stride, padding, dilation, ceil_mode):
    """Returns the pooled array and the flat argmax within each window (for backward)."""
    h, w = x.shape[2:]
    oh = pool_output_size(h, kernel[0], stride[0], padding[0], dilation[0], ceil_mode)
    ow = pool_output_size(w, kernel[1], stride[1], padding[1], dilation[1], ceil_mode)
    xp = _padded(x, padding, oh, ow, kernel, stride, dilation, -np.inf)
    win = _windows(xp, kernel[0], kernel[1], oh, ow, stride, dilation)
    flat = win.reshape(win.shape[:4] + (-1,))
    idx = flat.argmax(axis=-1)
    out = np.take_along_axis(flat, idx[..., None], axis=-1)[..., 0]
    return np.ascontiguousarray(out), idx


def max_pool2d_backward(grad, x_shape, idx, kernel, stride, padding, dilation):
    n, c, h, w = x_shape
    oh, ow = grad.shape[2:]
    ki, kj = np.divmod(idx, kernel[1])
    rows = np.arange(oh).reshape(1, 1, oh, 1) * stride[0] + ki * dilation[0] - padding[0]
    cols = np.arange(ow).reshape(1, 1, 1, ow) * stride[1] + kj * dilation[1] - padding[1]
    gx = np.zeros((n, c, h * w), dtype=grad.dtype)
    flat_index = (rows * w + cols).reshape(n, c, -1)
    for_n = gx.reshape(n * c, h * w)
    np.add.at(for_n, (np.arange(n * c)[:, None], flat_index.reshape(n * c, -1)), grad.reshape(n * c, -1))
    return gx.reshape(x_shape)


def avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override=None):
    h, w = x.shape[2:]
    oh = pool_output_size(h, kernel[0], stride[0], padding[0], 1, ceil_mode)
    ow = pool_output_size(w, kernel[1], stride[1], padding[1], 1, ceil_mode)
    xp = _padded(x, padding, oh, ow, kernel, stride, (1, 1), 0)
    win = _windows(xp, kernel[0], kernel[1], oh, ow, stride, (1, 1))
    sums = win.sum(axis=(4, 5))
    return sums / _avg_divisor(x.shape, kernel, stride, padding, oh, ow, count_include_pad,
                               divisor_override, x.dtype)


def _avg_divisor(x_shape, kernel, stride, padding, oh, ow, count_include_pad, divisor_override, dtype):
    if divisor_override:
        return np.asarray(divisor_override, dtype=dtype)
    h, w = x_shape[2:]

    def counts(size, out, k, s, p):
        start = np.arange(out) * s - p
        end = np.minimum(start + k, size + p)
        if count_include_pad:
            return end - start
        return np.minimum(end, size) - np.maximum(start, 0)

    ch = counts(h, oh, kernel[0], stride[0], padding[0])
    cw = counts(w, ow, kernel[1], stride[1], padding[1])
    return (ch[:, None] * cw[None, :]).astype(dtype)


def avg_pool2d_backward(grad, x_shape, kernel, stride, padding, count_include_pad, divisor_override=None):
    n, c, h, w = x_shape
    oh, ow = grad.shape[2:]
    g = grad / _avg_divisor(x_shape, kernel, stride, padding, oh, ow, count_include_pad,
                            divisor_override, grad.dtype)
    need_h = (oh - 1) * stride[0] + kernel[0]
    need_w = (ow - 1) * stride[1] + kernel[1]
    hp = max(h + 2 * padding[0], need_h)
    wp = max(w + 2 * padding[1], need_w)
    gxp = np.zeros((n, c, hp, wp), dtype=grad.dtype)
    for i in range(kernel[0]):
        for j in range(kernel[1]):
            gxp[:, :, i:i + stride[0] * (oh - 1) + 1:stride[0], j:j + stride[1] * (ow - 1) + 1:stride[1]] += g
    return gxp[:, :, padding[0]:padding[0] + h, padding[1]:padding[1] + w]
