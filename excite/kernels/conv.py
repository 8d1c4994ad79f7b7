"""2-D convolution kernels (NCHW) on plain arrays: forward, grad of input, grad of weight.

Dense and grouped convolutions go through an im2col view + BLAS matmul; depthwise
convolutions (one input channel per group) are a sum of shifted multiply-adds.
"""
import numpy as np
from numpy.lib.stride_tricks import as_strided


def output_size(size, kernel, stride, padding, dilation):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


def _pad(x, ph, pw):
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


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


def _is_depthwise(x, w, groups):
    return groups > 1 and groups == x.shape[1] and w.shape[0] == groups and w.shape[1] == 1


def conv2d_forward(x, w, bias, stride, padding, dilation, groups):
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    oh = output_size(h, kh, stride[0], padding[0], dilation[0])
    ow = output_size(wd, kw, stride[1], padding[1], dilation[1])
    if _is_depthwise(x, w, groups):
        out = _depthwise_forward(x, w, stride, padding, dilation, oh, ow)
    elif kh == kw == 1 and stride == (1, 1) and padding == (0, 0) and groups == 1:
        out = np.matmul(w.reshape(o, c), x.reshape(n, c, h * wd)).reshape(n, o, oh, ow)
    else:
        xp = _pad(x, *padding)
        win = _windows(xp, kh, kw, oh, ow, stride, dilation)
        og = o // groups
        outs = []
        for g in range(groups):
            cols = win[:, g * cg:(g + 1) * cg].reshape(n, cg * kh * kw, oh * ow)
            outs.append(np.matmul(w[g * og:(g + 1) * og].reshape(og, cg * kh * kw), cols))
        out = (outs[0] if groups == 1 else np.concatenate(outs, axis=1)).reshape(n, o, oh, ow)
    if bias is not None:
        out += bias.reshape(1, -1, 1, 1)
    return out


def _depthwise_forward(x, w, stride, padding, dilation, oh, ow):
    n, c = x.shape[:2]
    kh, kw = w.shape[2:]
    xp = _pad(x, *padding)
    out = np.zeros((n, c, oh, ow), dtype=np.result_type(x, w))
    for i in range(kh):
        for j in range(kw):
            hs, ws = i * dilation[0], j * dilation[1]
            patch = xp[:, :, hs:hs + stride[0] * (oh - 1) + 1:stride[0],
                       ws:ws + stride[1] * (ow - 1) + 1:stride[1]]
            out += patch * w[:, 0, i, j].reshape(1, c, 1, 1)
    return out


def conv2d_backward_input(grad, x_shape, w, stride, padding, dilation, groups):
    n, c, h, wd = x_shape
    o, cg, kh, kw = w.shape
    oh, ow = grad.shape[2:]
    ph, pw = padding
    gxp = np.zeros((n, c, h + 2 * ph, wd + 2 * pw), dtype=grad.dtype)
    if groups > 1 and groups == c and o == c and cg == 1:
        for i in range(kh):
            for j in range(kw):
                hs, ws = i * dilation[0], j * dilation[1]
                gxp[:, :, hs:hs + stride[0] * (oh - 1) + 1:stride[0],
                    ws:ws + stride[1] * (ow - 1) + 1:stride[1]] += grad * w[:, 0, i, j].reshape(1, c, 1, 1)
    else:
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


def conv2d_backward_weight(grad, x, w_shape, stride, padding, dilation, groups):
    n, c = x.shape[:2]
    o, cg, kh, kw = w_shape
    oh, ow = grad.shape[2:]
    xp = _pad(x, *padding)
    win = _windows(xp, kh, kw, oh, ow, stride, dilation)
    if groups > 1 and groups == c and o == c and cg == 1:
        gw = np.einsum("nchw,ncijhw->cij", grad, win, optimize=True)
        return gw.reshape(o, 1, kh, kw)
    og = o // groups
    out = np.empty(w_shape, dtype=grad.dtype)
    for g in range(groups):
        cols = win[:, g * cg:(g + 1) * cg].reshape(n, cg * kh * kw, oh * ow)
        gg = grad[:, g * og:(g + 1) * og].reshape(n, og, oh * ow)
        out[g * og:(g + 1) * og] = np.tensordot(gg, cols, axes=([0, 2], [0, 2])).reshape(og, cg, kh, kw)
    return out


def conv2d_backward_bias(grad):
    return grad.sum(axis=(0, 2, 3))
