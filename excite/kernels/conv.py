"""2-D convolution kernels (NCHW shapes) on plain arrays: forward, grad of input, grad of weight.

Which algorithm runs depends on the convolution's kind:
- depthwise (groups == in_channels): compiled channels-last kernels (`depthwise_cl`); the input
  gradient is the forward convolution of the (spread-out, for stride 2) gradient with the
  flipped kernel;
- dense 1x1: one compiled matrix product over the channels-last pixels (`pointwise`; strided 1x1:
  slice first), the gradients as products too;
- other dense: the compiled implicit product, each task gathering taps from its own padded copy of
  the rows it reads (`gemm.conv_dense`);
  its gradients per-image im2col + BLAS;
- grouped: per group, the implicit product of the dense case on the group's channels (`grouped`;
  groups of 8 or 16 channels in and out packed several to a vector); the input gradient is the
  forward convolution of the (spread-out, for stride 2) gradient with the flipped, transposed
  kernel, the weight gradient a product of gathered taps; other dtypes per-group im2col + BLAS.
float32 / float64 take the compiled paths; other dtypes im2col + BLAS (`blas.matmul`). The first
three return channels-last arrays (see `layout`); every kernel accepts any layout.

This module is the dispatch; each kind's code is a module of its own: `conv_depthwise`, `conv_dense`
(1x1 and other dense), `conv_grouped` (both grouped paths), with the zero-filled copies they share
(padded inputs, gradients spread out by the stride) in `conv_padding`.

`conv2d_forward` also applies an epilogue — ``act((conv + bias) * scale + shift) + residual``, batch
norm folded into ``scale`` / ``shift`` — inside the compiled kernels where they have one (1x1
products, the implicit dense product, depthwise rows), else in one pass after.
"""
import numpy as np

from . import activation as A
from . import buffers, pointwise
from .activations import IDENTITY
from .conv_dense import (_dense_backward_input, _dense_backward_weight, _dense_forward, _pointwise_backward_input,
                         _pointwise_backward_weight, _strided_pixels, dense_bands, dense_input)
from .conv_depthwise import (DEPTHWISE_TASKS, _depthwise_backward_input, _depthwise_backward_weight, _depthwise_input,
                             _no_bias, _taps_last, depthwise_cl)
from .conv_grouped import (_grouped_backward_input, _grouped_backward_input_cl, _grouped_backward_weight,
                           _grouped_backward_weight_cl, _grouped_forward, _grouped_run, _grouped_weights)
from .layout import from_nhwc, is_channels_last, nhwc


def output_size(size, kernel, stride, padding, dilation):
    return (size + 2 * padding - dilation * (kernel - 1) - 1) // stride + 1


# ----- dispatch ---------------------------------------------------------------------------
def is_depthwise(c, w_shape, groups):
    return groups > 1 and groups == c and w_shape[1] == 1


def common_dtype(*arrays):
    """The dtype a convolution of these arrays computes in: theirs if floating, else float64."""
    dtype = np.result_type(*arrays)
    return dtype if dtype.kind == "f" else np.dtype(np.float64)


def conv2d_forward(x, w, bias, stride, padding, dilation, groups, scale=None, shift=None, activation=None,
                   residual=None):
    """``act((conv2d(x, w) + bias) * scale + shift) + residual``; the plain convolution when the
    epilogue arguments are None.

    ``scale`` / ``shift`` are per output channel (batch norm's affine map); ``activation`` is a
    registry name (`activations`) or None; ``residual`` has the output's shape.
    """
    plan = Conv2dPlan(x.shape, common_dtype(x, w), is_channels_last(x), w, bias, stride, padding, dilation, groups,
                      scale, shift, activation)
    return plan(x, residual=residual)


class Conv2dPlan:
    """One convolution and its epilogue prepared for an input shape and layout:
    ``plan(x, out=None, residual=None)`` returns ``act((conv2d(x, w) + bias) * scale + shift) + residual``.

    The algorithm (depthwise rows, a 1x1 product, the implicit dense product, or the plain
    fallbacks) and the operands it wants (transposed or tap-major weights, the bias folded into
    the epilogue's shift, tap offsets) are chosen here once; eager calls make a plan per call, a
    compiled graph keeps it (``kept``: operands laid out for speed over many calls). ``out``
    (channels-last [N, OH, OW, O], C-contiguous) receives the result where a compiled kernel writes
    it; the return value is always the NCHW-shaped result.
    """

    def __init__(self, x_shape, dtype, channels_last, w, bias, stride, padding, dilation, groups, scale=None,
                 shift=None, activation=None, kept=False):
        n, c, h, wd = x_shape
        o, cg, kh, kw = w.shape
        self.stride, self.padding, self.dilation, self.groups = tuple(stride), tuple(padding), tuple(dilation), groups
        oh = output_size(h, kh, stride[0], padding[0], dilation[0])
        ow = output_size(wd, kw, stride[1], padding[1], dilation[1])
        self.out_shape = (n, o, oh, ow)
        self.dtype = dtype = np.dtype(dtype)
        w = w.astype(dtype, copy=False)
        self.w = w
        kind, self.later = A.compiled_code(activation)
        self.kind = kind
        self.activation = None if kind == IDENTITY else activation
        compiled = pointwise.supported(np.empty(0, dtype), w)
        # the bias rides in the epilogue's shift where a compiled kernel has an epilogue
        grouped_compiled = groups > 1 and not is_depthwise(c, w.shape, groups) and compiled
        if (scale is not None or shift is not None or kind != IDENTITY
                or (bias is not None and (groups == 1 or grouped_compiled) and compiled)):
            scale, shift = _with_bias(scale, shift, bias, o, dtype)
            bias = None
        self.scale, self.shift = scale, shift
        self.bias = None if bias is None else bias.astype(dtype, copy=False)
        if is_depthwise(c, w.shape, groups):
            self.path = "depthwise"
            self.taps = buffers.aligned(_taps_last(w)) if kept else _taps_last(w)
            self.band = -(-oh // -(-DEPTHWISE_TASKS // max(n, 1)))  # several row bands per image when the batch is small
            empty = _no_bias(dtype)
            self.kernel_bias = np.zeros(o, dtype) if self.bias is None else np.ascontiguousarray(self.bias)
            self.kernel_scale = empty if scale is None else scale
            self.kernel_shift = empty if shift is None else shift
            self.work_ns = n * oh * ow * o * (kh * kw * 0.1 + 0.5)
        elif groups == 1 and kh == kw == 1 and padding == (0, 0) and compiled:
            self.path = "pointwise"
            self.product = pointwise.Pointwise(n * oh * ow, w, scale, shift, self.activation, dtype, kept)
        elif groups == 1 and compiled:
            self.path = "dense"
            self.b = (buffers.aligned_empty if kept else np.empty)((c * kh * kw, o), dtype)
            np.copyto(self.b, w.reshape(o, -1).T)
            self.kernel_scale = np.ones(o, dtype) if scale is None else scale
            self.kernel_shift = np.zeros(o, dtype) if shift is None else shift
            self.channels_last = channels_last
            self.band, self.rows, self.taps = dense_bands(x_shape, kh, kw, oh, self.stride, self.padding,
                                                          self.dilation, channels_last, dtype.itemsize)
            self.work_ns = n * oh * ow * o * c * kh * kw * pointwise.NS_PER_MADD
        elif grouped_compiled:
            self.path = "grouped_compiled"
            self.packed, self.b = _grouped_weights(w, groups)
            self.kernel_scale = np.ones(o, dtype) if scale is None else scale
            self.kernel_shift = np.zeros(o, dtype) if shift is None else shift
            self.work_ns = n * oh * ow * o * cg * kh * kw * pointwise.NS_PER_MADD
        else:
            self.path = "dense_plain" if groups == 1 else "grouped"

    def bind(self, x, out, residual=None):
        """This plan's call on arrays that stay the same from call to call (a compiled graph's buffers), as a
        function of no arguments with the kernel's operands made once; None where the path has no such form
        (it is then called as usual). ``x`` and ``residual`` are channels-last, ``out`` [N, OH, OW, O]."""
        n, o, oh, ow = self.out_shape
        if (self.later is not None or x.dtype != self.dtype or not is_channels_last(x)
                or (residual is not None and (residual.dtype != self.dtype or not is_channels_last(residual)))):
            return None
        if self.path == "pointwise" and self.stride == (1, 1):
            rows = None if residual is None else nhwc(residual).reshape(-1, o)
            return self.product.bind(nhwc(x).reshape(-1, x.shape[1]), out.reshape(-1, o), rows)
        if self.path == "depthwise" and residual is None and o == x.shape[1]:
            return depthwise_cl.depthwise_forward_cl.bind(*self._depthwise_args(nhwc(x), out), work_ns=self.work_ns)
        return None

    def _depthwise_args(self, xc, out):
        """The depthwise kernel's arguments for the channels-last input ``xc`` (channels repeated to the outputs)."""
        return (xc, self.taps, self.kernel_bias, self.kernel_scale, self.kernel_shift, self.kind, out, *self.stride,
                *self.padding, *self.dilation, self.band)

    def __call__(self, x, out=None, residual=None):
        n, o, oh, ow = self.out_shape
        x = x.astype(self.dtype, copy=False)
        if residual is not None and residual.shape != self.out_shape:
            raise ValueError(f"residual must have the output's shape {self.out_shape}, got {residual.shape}")
        if out is None and self.path in ("depthwise", "pointwise", "dense", "grouped_compiled"):
            out = buffers.empty((n, oh, ow, o), self.dtype)
        epilogue_done = residual_done = False
        if self.path == "depthwise":
            depthwise_cl.depthwise_forward_cl(*self._depthwise_args(_depthwise_input(x, o // x.shape[1]), out),
                                              work_ns=self.work_ns)
            result, epilogue_done = from_nhwc(out), True
        elif self.path == "pointwise":
            xc = _strided_pixels(x, self.stride)
            rows = None if residual is None else nhwc(residual.astype(self.dtype, copy=False)).reshape(-1, o)
            self.product(xc.reshape(-1, xc.shape[3]), out.reshape(-1, o), rows)
            result, epilogue_done, residual_done = from_nhwc(out), True, residual is not None
        elif self.path == "dense":
            pointwise.gemm.conv_dense(dense_input(x, self.channels_last), self.taps, self.b, out, self.kernel_scale,
                                      self.kernel_shift, self.kind, *self.stride, *self.padding, self.band, self.rows,
                                      x.shape[1] if self.channels_last else 1, work_ns=self.work_ns)
            result, epilogue_done = from_nhwc(out), True
        elif self.path == "grouped_compiled":
            _grouped_run(x, self.w.shape, self.packed, self.b, self.stride, self.padding, self.dilation, out,
                         self.kernel_scale, self.kernel_shift, self.kind, self.work_ns)
            result, epilogue_done = from_nhwc(out), True
        elif self.path == "dense_plain":
            result = from_nhwc(_dense_forward(x, self.w, self.stride, self.padding, self.dilation, oh, ow))
        else:
            result = _grouped_forward(x, self.w, self.stride, self.padding, self.dilation, self.groups, oh, ow)
        if not epilogue_done:
            if self.scale is not None:
                from .norm import batch_norm_apply

                result = batch_norm_apply(result, self.scale, self.shift, self.activation, out=result)
            elif self.bias is not None:
                result += self.bias.reshape(1, -1, 1, 1)
        if self.later is not None:
            A.forward(result, self.later, out=result)
        if residual is not None and not residual_done:
            result += residual
        if out is not None and not epilogue_done and result.base is not out:
            out[...] = nhwc(result)
            result = from_nhwc(out)
        return result


def _with_bias(scale, shift, bias, channels, dtype):
    """(scale, shift) of the epilogue with the convolution's bias folded in: (y + b) * s + t = y * s + (b * s + t)."""
    scale = np.ones(channels, dtype) if scale is None else np.ascontiguousarray(scale, dtype=dtype)
    shift = np.zeros(channels, dtype) if shift is None else np.ascontiguousarray(shift, dtype=dtype)
    if bias is not None:
        shift = shift + bias.astype(dtype, copy=False) * scale
    return scale, shift


def conv2d_backward_input(grad, x_shape, w, stride, padding, dilation, groups):
    n, c, h, wd = x_shape
    o, cg, kh, kw = w.shape
    dtype = common_dtype(grad, w)
    grad = grad.astype(dtype, copy=False)
    w = w.astype(dtype, copy=False)
    if is_depthwise(c, w.shape, groups):
        return _depthwise_backward_input(grad, x_shape, w, stride, padding, dilation)
    if groups == 1:
        if kh == kw == 1 and padding == (0, 0):
            return from_nhwc(_pointwise_backward_input(grad, x_shape, w, stride))
        return from_nhwc(_dense_backward_input(grad, x_shape, w, stride, padding, dilation))
    if pointwise.supported(grad, w):
        gx = _grouped_backward_input_cl(grad, x_shape, w, stride, padding, dilation, groups)
        if gx is not None:
            return from_nhwc(gx)
    return _grouped_backward_input(grad, x_shape, w, stride, padding, dilation, groups)


def conv2d_backward_weight(grad, x, w_shape, stride, padding, dilation, groups):
    n, c = x.shape[:2]
    o, cg, kh, kw = w_shape
    dtype = common_dtype(grad, x)
    grad = grad.astype(dtype, copy=False)
    x = x.astype(dtype, copy=False)
    if is_depthwise(c, w_shape, groups):
        return _depthwise_backward_weight(grad, x, w_shape, stride, padding, dilation)
    if groups == 1:
        if kh == kw == 1 and padding == (0, 0):
            return _pointwise_backward_weight(grad, x, w_shape, stride)
        return _dense_backward_weight(grad, x, w_shape, stride, padding, dilation)
    if pointwise.supported(grad, x):
        return _grouped_backward_weight_cl(grad, x, w_shape, stride, padding, dilation, groups)
    return _grouped_backward_weight(grad, x, w_shape, stride, padding, dilation, groups)


def conv2d_backward_bias(grad):
    if grad.transpose(0, 2, 3, 1).flags.c_contiguous:
        return grad.transpose(0, 2, 3, 1).reshape(-1, grad.shape[1]).sum(axis=0)
    return grad.sum(axis=(0, 2, 3))
