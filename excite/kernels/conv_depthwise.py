"""Depthwise convolutions (groups == in_channels): the compiled channels-last row kernels, forward and gradients."""
import numpy as np

from . import buffers
from .activations import IDENTITY
from .conv_padding import _spread_by_stride
from .layout import from_nhwc, nhwc
from .threads import LazyModule

depthwise_cl = LazyModule("depthwise_cl")  # compiled kernels: numba loads on first use
DEPTHWISE_TASKS = 8  # forward tasks per call at least (bands of rows when the batch is small)


# ----- depthwise: compiled channels-last kernels -------------------------------------------
def _no_bias(dtype):
    return np.empty(0, dtype=dtype)


def _depthwise_input(x, mult):
    """x as [N, H, W, C*mult]: output channel o reads input channel o // mult."""
    xc = nhwc(x)
    return np.repeat(xc, mult, axis=3) if mult > 1 else xc


def _taps_last(w):
    """[O, 1, KH, KW] -> contiguous [KH, KW, O]: one vector of channel weights per tap."""
    return np.ascontiguousarray(w[:, 0].transpose(1, 2, 0))


def _depthwise_forward(x, w, bias, stride, padding, dilation, oh, ow, scale=None, shift=None, kind=IDENTITY):
    """Channels-last depthwise conv; ``scale``/``shift``/``kind`` add batch norm and an activation."""
    n = x.shape[0]
    o = w.shape[0]
    xc = _depthwise_input(x, o // x.shape[1])
    empty = _no_bias(x.dtype)
    b = np.zeros(o, dtype=x.dtype) if bias is None else np.ascontiguousarray(bias, dtype=x.dtype)
    scale = empty if scale is None else np.ascontiguousarray(scale, dtype=x.dtype)
    shift = empty if shift is None else np.ascontiguousarray(shift, dtype=x.dtype)
    out = buffers.empty((n, oh, ow, o), x.dtype)
    band = -(-oh // -(-DEPTHWISE_TASKS // max(n, 1)))  # several row bands per image when the batch is small
    depthwise_cl.depthwise_forward_cl(xc, _taps_last(w), b, scale, shift, kind, out,
                                      *stride, *padding, *dilation, band, work_ns=out.size * (w[0, 0].size * 0.1 + 0.5))
    return from_nhwc(out)


def _depthwise_backward_input(grad, x_shape, w, stride, padding, dilation):
    n, c, h, wd = x_shape
    o, _, kh, kw = w.shape
    flipped_padding = ((kh - 1) * dilation[0] - padding[0], (kw - 1) * dilation[1] - padding[1])
    if min(flipped_padding) >= 0 and max(stride) <= 2:
        # the gradient is the stride-1 forward convolution of grad with the flipped kernel, after
        # spreading grad out by the stride (zeros between its pixels, and below / right of them for
        # input rows no output reads): more multiply-adds than a scatter for stride 2, but on the
        # compiled row kernels
        g = _spread_by_stride(grad, (h, wd), (kh, kw), stride, flipped_padding, dilation)
        gx = nhwc(_depthwise_forward(from_nhwc(g), np.ascontiguousarray(w[:, :, ::-1, ::-1]), None,
                                     (1, 1), flipped_padding, dilation, h, wd))
    else:
        gx = buffers.empty((n, h, wd, o), grad.dtype)
        depthwise_cl.depthwise_backward_input_cl(nhwc(grad), _taps_last(w), gx, *stride, *padding, *dilation,
                                                 work_ns=grad.size * kh * kw * 0.15)
    if o > c:
        gx = gx.reshape(n, h, wd, c, o // c).sum(axis=4)
    return from_nhwc(gx)


def _depthwise_backward_weight(grad, x, w_shape, stride, padding, dilation):
    o, _, kh, kw = w_shape
    partial = np.empty((x.shape[0], kh, kw, o), dtype=np.float64)
    xc = _depthwise_input(x, o // x.shape[1])
    depthwise_cl.depthwise_backward_weight_cl(nhwc(grad), xc, partial, *stride, *padding, *dilation,
                                              work_ns=grad.size * kh * kw * 0.15)
    total = partial[0].copy() if partial.shape[0] == 1 else partial.sum(axis=0)
    return np.ascontiguousarray(total.transpose(2, 0, 1)[:, None].astype(x.dtype))
