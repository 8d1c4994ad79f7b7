"""Inference-only fusion: convolution, batch norm (eval affine) and activation in as few passes as possible.

The result equals ``act(batch_norm(conv2d(x)))`` evaluated in the same order (convolution,
then ``* scale + shift``, then the activation), so it agrees with the unfused path to rounding.
Depthwise convolutions apply the affine map and activation in the kernel's epilogue; 1x1 and
dense ones run BLAS, then one in-place pass.
"""
import numpy as np

from . import conv as C
from .activation_kinds import KINDS
from .layout import from_nhwc
from .threads import LazyModule

batchnorm = LazyModule("batchnorm")  # compiled kernels: numba loads on first use


def conv_bn_act_inference(x, w, conv_bias, stride, padding, dilation, groups, scale, shift, activation):
    """``act(conv2d(x, w, conv_bias) * scale + shift)`` per output channel; channels-last for groups 1 / depthwise.

    ``scale`` / ``shift`` may be None (no normalisation); ``activation`` is a name or None.
    """
    kind = KINDS[activation]
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    dtype = C._common_dtype(x, w)
    x = x.astype(dtype, copy=False)
    w = w.astype(dtype, copy=False)
    oh = C.output_size(h, kh, stride[0], padding[0], dilation[0])
    ow = C.output_size(wd, kw, stride[1], padding[1], dilation[1])
    if C._is_depthwise(c, w.shape, groups):
        return C._depthwise_forward(x, w, conv_bias, stride, padding, dilation, oh, ow, scale, shift, kind)
    if groups != 1:
        from .norm import batch_norm_apply

        y = C.conv2d_forward(x, w, conv_bias, stride, padding, dilation, groups)
        if scale is None:
            scale, shift = np.ones(o, dtype), np.zeros(o, dtype)
        return batch_norm_apply(y, scale, shift, activation, out=y)
    if kh == kw == 1 and padding == (0, 0):
        out = C._pointwise_forward(x, w, stride)
    else:
        out = C._dense_forward(x, w, stride, padding, dilation, oh, ow)
    if scale is None:
        scale = np.ones(o, dtype=np.float64)
        shift = np.zeros(o, dtype=np.float64)
    if conv_bias is not None:
        shift = shift + conv_bias * scale  # act((conv + b) * s + t) = act(conv * s + (b * s + t))
    affine_activation_rows_inplace(out.reshape(-1, o), scale, shift, kind)
    return from_nhwc(out)


ROW_ELEMENTS = 1024  # rows of few channels are regrouped into rows of about this many elements


def affine_activation_rows_inplace(rows, scale, shift, kind):
    """rows[r] = act(rows[r] * scale + shift) for C-contiguous [M, C]; short rows are regrouped so
    each loop runs over ~1024 elements (scale / shift tiled to match)."""
    m, c = rows.shape
    scale = np.asarray(scale, dtype=rows.dtype)
    shift = np.asarray(shift, dtype=rows.dtype)
    group = max(1, ROW_ELEMENTS // c)
    main = (m // group) * group if group > 1 else 0
    if main:
        batchnorm.affine_activation_rows_inplace(rows[:main].reshape(main // group, group * c),
                                                 np.tile(scale, group), np.tile(shift, group), kind,
                                                 work_ns=main * c * 0.6)
    if main < m:
        batchnorm.affine_activation_rows_inplace(rows[main:], np.ascontiguousarray(scale),
                                                 np.ascontiguousarray(shift), kind, work_ns=(m - main) * c * 0.6)
