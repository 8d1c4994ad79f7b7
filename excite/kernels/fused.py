"""Inference-only fusion: convolution, batch norm (eval affine), activation and a residual add in one pass.

The result equals ``act(batch_norm(conv2d(x))) + residual`` evaluated as convolution, then
``* scale + shift`` (the conv bias folded into ``shift``), then the activation, then the add, so it
agrees with the unfused path to rounding. Depthwise convolutions apply the affine map and
activation in the kernel's epilogue, 1x1 ones in the epilogue of the compiled matrix product; the
other convolutions run, then one in-place pass.
"""
import numpy as np

from . import conv as C
from . import pointwise
from .activation_kinds import KINDS
from .layout import from_nhwc, nhwc
from .threads import LazyModule

batchnorm = LazyModule("batchnorm")  # compiled kernels: numba loads on first use
_EMPTY = {}


def _empty(dtype):
    arr = _EMPTY.get(dtype)
    if arr is None:
        arr = _EMPTY[dtype] = np.empty(0, dtype)
    return arr


def inference_affine(norm, conv_bias, channels, dtype):
    """(scale, shift) in ``dtype`` with ``act(conv * scale + shift)`` = ``act(bn(conv + conv_bias))``.

    ``norm`` is (running_mean, running_var, weight or None, bias or None, eps) or None.
    """
    scale = np.empty(channels, dtype)
    shift = np.empty(channels, dtype)
    if norm is None:
        scale[:] = 1
        shift[:] = 0 if conv_bias is None else conv_bias
        return scale, shift
    mean, var, weight, bias, eps = norm
    batchnorm.inference_affine(mean, var, _empty(mean.dtype) if weight is None else weight,
                               _empty(mean.dtype) if bias is None else bias,
                               _empty(mean.dtype) if conv_bias is None else conv_bias, float(eps), scale, shift)
    return scale, shift


def conv_bn_act_inference(x, w, conv_bias, stride, padding, dilation, groups, norm, activation, residual=None):
    """``act(batch_norm(conv2d(x, w, conv_bias))) + residual``; channels-last for groups 1 / depthwise.

    ``norm`` is (running_mean, running_var, weight, bias, eps) or None (no normalisation);
    ``activation`` is a name or None; ``residual`` (the output's shape) is added last, or None.
    """
    kind = KINDS[activation]
    n, c, h, wd = x.shape
    o, cg, kh, kw = w.shape
    dtype = C._common_dtype(x, w)
    x = x.astype(dtype, copy=False)
    w = w.astype(dtype, copy=False)
    oh = C.output_size(h, kh, stride[0], padding[0], dilation[0])
    ow = C.output_size(wd, kw, stride[1], padding[1], dilation[1])
    scale, shift = inference_affine(norm, conv_bias, o, dtype)
    pointwise_fused = kh == kw == 1 and padding == (0, 0) and groups == 1 and pointwise.supported(x, w)
    dense_fused = groups == 1 and not pointwise_fused and C.implicit_dense_applies(x, w)
    if pointwise_fused and residual is not None:
        if residual.shape != (n, o, oh, ow):
            raise ValueError(f"residual must have the output's shape {(n, o, oh, ow)}, got {residual.shape}")
        rows = nhwc(residual.astype(dtype, copy=False)).reshape(-1, o)
        return from_nhwc(C._pointwise_forward(x, w, stride, scale, shift, kind, rows))
    if pointwise_fused:
        out = from_nhwc(C._pointwise_forward(x, w, stride, scale, shift, kind))
    elif dense_fused:
        out = from_nhwc(C._dense_implicit(x, w, stride, padding, dilation, oh, ow, scale, shift, kind))
    elif C._is_depthwise(c, w.shape, groups):
        out = C._depthwise_forward(x, w, None, stride, padding, dilation, oh, ow, scale, shift, kind)
    elif groups != 1:
        from .norm import batch_norm_apply

        out = C.conv2d_forward(x, w, None, stride, padding, dilation, groups)
        out = batch_norm_apply(out, scale, shift, activation, out=out)
    else:
        if kh == kw == 1 and padding == (0, 0):
            rows = C._pointwise_forward(x, w, stride)
        else:
            rows = C._dense_forward(x, w, stride, padding, dilation, oh, ow)
        affine_activation_rows_inplace(rows.reshape(-1, o), scale, shift, kind)
        out = from_nhwc(rows)
    if residual is not None:
        out += residual
    return out


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
