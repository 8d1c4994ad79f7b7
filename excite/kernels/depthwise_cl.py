"""Compiled depthwise conv2d on channels-last arrays [N, H, W, C]: forward and backward.

Channels are the innermost (vectorised) loop everywhere; weights come as [KH, KW, C]. No
fastmath: sums are plain adds in a fixed order, so results do not depend on the thread count.
"""
import numpy as np
from numba import prange

from .elementwise import epilogue_rows
from .scalar_math import IDENTITY
from .threads import helper, inline_helper, kernel


@helper
def _columns(off, stride, out_w, in_w):
    """Output columns ox whose input column ox * stride + off lies inside [0, in_w)."""
    lo = max(0, -(off // stride))
    hi = min(out_w, (in_w - 1 - off) // stride + 1)
    return lo, hi


@helper
def _madd(acc, a, b):
    for c in range(acc.shape[0]):
        acc[c] += a[c] * b[c]


@inline_helper
def _load_band(x, n, iy0, rows, pw, buf):
    """buf[r, pw + ix] = x[n, iy0 + r, ix], zero where the row or column is outside the image."""
    h, wd = x.shape[1], x.shape[2]
    for r in range(rows):
        iy = iy0 + r
        dst = buf[r]
        if iy < 0 or iy >= h:
            dst[:, :] = 0
        else:
            dst[:pw, :] = 0
            dst[pw + wd:, :] = 0
            dst[pw:pw + wd, :] = x[n, iy]


@inline_helper
def _band_rows(buf, w, bias, out_rows, sh, sw, dh, dw, kh, kw, pairs):
    """Output rows from a zero-padded band of input rows; with constant kh, kw the taps unroll and
    the channel loop vectorises with the sums in registers. ``pairs`` computes two neighbouring
    outputs per weight load (a win for 3x3; the unrolled 5x5 pair is too big to vectorise)."""
    ch = w.shape[2]
    ow = out_rows.shape[1]
    for y in range(out_rows.shape[0]):
        orow = out_rows[y]
        base = y * sh
        ox = 0
        if pairs:
            while ox + 2 <= ow:
                col = ox * sw
                for c in range(ch):
                    a0 = bias[c]
                    a1 = bias[c]
                    for i in range(kh):
                        for j in range(kw):
                            wv = w[i, j, c]
                            a0 += wv * buf[base + i * dh, col + j * dw, c]
                            a1 += wv * buf[base + i * dh, col + sw + j * dw, c]
                    orow[ox, c] = a0
                    orow[ox + 1, c] = a1
                ox += 2
        while ox < ow:
            col = ox * sw
            for c in range(ch):
                acc = bias[c]
                for i in range(kh):
                    for j in range(kw):
                        acc += w[i, j, c] * buf[base + i * dh, col + j * dw, c]
                orow[ox, c] = acc
            ox += 1


@inline_helper
def _direct_rows(x, n, oy0, w, bias, out_rows, sh, sw, ph, pw, dh, dw):
    """Any kernel size: per tap, a multiply-add over the output row (no padded copy)."""
    h, wd = x.shape[1], x.shape[2]
    kh, kw = w.shape[0], w.shape[1]
    ow = out_rows.shape[1]
    for y in range(out_rows.shape[0]):
        oy = oy0 + y
        acc = out_rows[y]
        for ox in range(ow):
            acc[ox, :] = bias
        for i in range(kh):
            iy = oy * sh - ph + i * dh
            if iy < 0 or iy >= h:
                continue
            xrow = x[n, iy]
            for j in range(kw):
                off = j * dw - pw
                lo, hi = _columns(off, sw, ow, wd)
                wv = w[i, j]
                for ox in range(lo, hi):
                    _madd(acc[ox], wv, xrow[ox * sw + off])


@inline_helper
def _forward_task(x, w, bias, scale, shift, kind, out, sh, sw, ph, pw, dh, dw, n, oy0, oy1):
    """Output rows oy0..oy1 of image n."""
    kh, kw = w.shape[0], w.shape[1]
    wd, ch = x.shape[2], x.shape[3]
    ow = out.shape[2]
    rows = out[n, oy0:oy1]
    if (kh == 3 and kw == 3) or (kh == 5 and kw == 5):
        wp = max(wd + 2 * pw, (ow - 1) * sw + (kw - 1) * dw + 1)
        band_in = (oy1 - 1 - oy0) * sh + (kh - 1) * dh + 1
        buf = np.empty((band_in, wp, ch), dtype=x.dtype)
        _load_band(x, n, oy0 * sh - ph, band_in, pw, buf)
        if kh == 3:
            _band_rows(buf, w, bias, rows, sh, sw, dh, dw, 3, 3, True)
        else:
            _band_rows(buf, w, bias, rows, sh, sw, dh, dw, 5, 5, False)
    else:
        _direct_rows(x, n, oy0, w, bias, rows, sh, sw, ph, pw, dh, dw)
    if scale.size or kind != IDENTITY:
        for y in range(oy1 - oy0):
            epilogue_rows(out[n, oy0 + y], scale, shift, kind)


@kernel
def depthwise_forward_cl(x, w, bias, scale, shift, kind, out, sh, sw, ph, pw, dh, dw, band):
    """out[n, oy, ox, c] = act(conv * scale[c] + shift[c]) where conv = bias[c] + sum_ij w[i, j, c] * x[...].

    ``x[n, oy*sh - ph + i*dh, ox*sw - pw + j*dw, c]`` is the tap (zero outside); ``scale`` and
    ``shift`` (batch norm's affine map, folded into the epilogue) have C values, or none to skip
    the map. Tasks are bands of ``band`` output rows of one image; every output is
    computed the same way whatever the banding. 3x3 and 5x5 kernels copy each band into a
    zero-padded buffer and unroll the taps; other sizes accumulate tap by tap.
    """
    oh = out.shape[1]
    bands = (oh + band - 1) // band
    for t in prange(x.shape[0] * bands):
        oy0 = (t % bands) * band
        _forward_task(x, w, bias, scale, shift, kind, out, sh, sw, ph, pw, dh, dw, t // bands, oy0,
                      min(oh, oy0 + band))


@kernel
def depthwise_backward_input_cl(grad, w, grad_x, sh, sw, ph, pw, dh, dw):
    """grad_x[n, iy, ix, c] = sum over the taps and outputs that read x[n, iy, ix, c]."""
    n_img, h, wd, ch = grad_x.shape
    kh, kw = w.shape[0], w.shape[1]
    oh, ow = grad.shape[1], grad.shape[2]
    for p in prange(n_img * h):
        n = p // h
        iy = p % h
        acc = grad_x[n, iy]
        acc[:, :] = 0
        for i in range(kh):
            t = iy + ph - i * dh
            if t < 0 or t % sh:
                continue
            oy = t // sh
            if oy >= oh:
                continue
            grow = grad[n, oy]
            for j in range(kw):
                off = j * dw - pw
                lo, hi = _columns(off, sw, ow, wd)
                wv = w[i, j]
                for ox in range(lo, hi):
                    _madd(acc[ox * sw + off], wv, grow[ox])


@inline_helper
def _dot_columns(acc, grow, xrow, lo, hi, sw, off):
    """acc[c] += sum over ox in [lo, hi) of grow[ox, c] * xrow[ox * sw + off, c], four columns at a
    time (one accumulator load / store per four products)."""
    ch = acc.shape[0]
    ox = lo
    while ox + 4 <= hi:
        x0 = ox * sw + off
        for c in range(ch):
            acc[c] += (grow[ox, c] * xrow[x0, c] + grow[ox + 1, c] * xrow[x0 + sw, c]
                       + grow[ox + 2, c] * xrow[x0 + 2 * sw, c] + grow[ox + 3, c] * xrow[x0 + 3 * sw, c])
        ox += 4
    while ox < hi:
        _madd(acc, grow[ox], xrow[ox * sw + off])
        ox += 1


@kernel
def depthwise_backward_weight_cl(grad, x, partial, sh, sw, ph, pw, dh, dw):
    """partial[n, i, j, c] = sum over outputs of image n of grad * the input tap (float64 totals)."""
    n_img, h, wd, ch = x.shape
    kh, kw = partial.shape[1], partial.shape[2]
    oh, ow = grad.shape[1], grad.shape[2]
    for n in prange(n_img):
        row_sum = np.empty((kh, kw, ch), dtype=x.dtype)
        total = partial[n]
        total[:, :, :] = 0
        for oy in range(oh):
            row_sum[:, :, :] = 0
            grow = grad[n, oy]
            for i in range(kh):
                iy = oy * sh - ph + i * dh
                if iy < 0 or iy >= h:
                    continue
                xrow = x[n, iy]
                for j in range(kw):
                    off = j * dw - pw
                    lo, hi = _columns(off, sw, ow, wd)
                    _dot_columns(row_sum[i, j], grow, xrow, lo, hi, sw, off)
            for i in range(kh):
                for j in range(kw):
                    for c in range(ch):
                        total[i, j, c] += row_sum[i, j, c]
