"""The fused Squeeze-and-Excitation block on plain arrays: forward and backward.

``out = x * act2(fc2(act1(fc1(mean_hw(x)))))`` with fc1 / fc2 the 1x1 convolutions (as matrices)
of torchvision's SqueezeExcitation. Forward reads x twice (pool, gate); backward reads the
gradient twice (the gate's gradient sums, then grad * gate + the pooled gradient / HW) instead
of the five or six full passes the unfused graph makes.
"""

import numpy as np

from . import activation as A
from . import activations, buffers, pointwise
from .layout import empty_nhwc, is_channels_last, like
from .pooling import global_avg_pool2d
from .threads import LazyModule, compiled_worthwhile

channel_reduce = LazyModule("channel_reduce")  # compiled kernels: numba loads on first use



def _activation_backward(grad, pre, post, name):
    """grad * act' from the pre-activation or the output, whichever the record's derivative uses."""
    record = activations.get(name)
    return A.backward(grad, post if record.saves_output else pre, name)


def _matrix(w):
    return w.reshape(w.shape[0], w.shape[1])


def _layout(x):
    """'channels_last' or 'planes' where the compiled kernels apply (views [N, P, C] / [N, C, P]), else None."""
    if not compiled_worthwhile(x, "se"):
        return None
    if is_channels_last(x):
        return "channels_last"
    return "planes" if x.flags.c_contiguous else None


def _views(layout, *arrays):
    """The [N, P, C] or [N, C, P] views of NCHW-shaped arrays in ``layout``."""
    n, c, h, w = arrays[0].shape
    if layout == "channels_last":
        return [a.transpose(0, 2, 3, 1).reshape(n, h * w, c) for a in arrays]
    return [a.reshape(n, c, h * w) for a in arrays]


def _empty_like(x, layout):
    return empty_nhwc(*x.shape, x.dtype) if layout == "channels_last" else buffers.empty(x.shape, x.dtype)


def se_inference(x, w1, b1, w2, b2, activation="relu", scale_activation="sigmoid"):
    """The output of `se_forward` without the cache for backward: the pooling, both layers as compiled
    products with the bias and activation in their epilogue (`pointwise`), and the compiled gate."""
    layout = _layout(x)
    if (layout is None or not (w1.dtype == w2.dtype == x.dtype)
            or not (activations.compiled(activation) and activations.compiled(scale_activation))):
        return se_forward(x, w1, b1, w2, b2, activation, scale_activation)[0]
    return SqueezeExcitationPlan(x.shape[0], x.dtype, layout, w1, b1, w2, b2, activation, scale_activation)(x)


FUSED_MAX_WEIGHTS = 1 << 18  # every SE of MobileNetV3, EfficientNet and RegNet-Y up to 1.6GF; wider ones split their layers over threads


class SqueezeExcitationPlan:
    """The SE block's inference for a batch size and layout ('channels_last' or 'planes'), prepared once:
    ``plan(x, out=None)`` pools x's channels, runs both layers as compiled products (bias and
    activation in their epilogues) and writes ``x * gate`` into ``out`` (x's layout)."""

    def __init__(self, batch, dtype, layout, w1, b1, w2, b2, activation, scale_activation):
        self.layout = layout
        self.fc1 = pointwise.Pointwise(batch, w1, None, b1, activation, dtype)
        self.fc2 = pointwise.Pointwise(batch, w2, None, b2, scale_activation, dtype)
        self.means = channel_reduce.channel_means if layout == "channels_last" else channel_reduce.plane_means
        self.gate = channel_reduce.gate_forward if layout == "channels_last" else channel_reduce.plane_gate
        # channels-last with compiled activations and layers of at most FUSED_MAX_WEIGHTS (the fused kernel
        # runs an image's layers on one thread): the whole block in one kernel call per batch
        self.fused = None
        if (layout == "channels_last" and self.fc1.later is None and self.fc2.later is None
                and w1.shape[0] * w1.shape[1] <= FUSED_MAX_WEIGHTS):
            self.fused = (np.ascontiguousarray(_matrix(w1).T, dtype=dtype), self.fc1.shift,
                          np.ascontiguousarray(_matrix(w2).T, dtype=dtype), self.fc2.shift, self.fc1.kind, self.fc2.kind)

    def gates(self, x):
        """The [N, C] gate of x: channel means, then both layers."""
        n, c = x.shape[:2]
        dtype = x.dtype
        (xv,) = _views(self.layout, x)
        pooled = np.empty((n, c), dtype)
        self.means(xv, pooled, work_ns=x.size * 0.3)
        hidden = self.fc1(pooled, np.empty((n, self.fc1.n), dtype))
        return self.fc2(hidden, np.empty((n, c), dtype))

    def bind(self, x, out):
        """The fused block's call on arrays that stay the same from call to call (a compiled graph's buffers), as
        a function of no arguments with the views made once; None when the block is not fused."""
        if (self.fused is None or x.dtype != self.fused[0].dtype or self.layout != "channels_last"
                or not (is_channels_last(x) and is_channels_last(out))):
            return None  # (the views must be views, not copies made once)
        return self._fused_call(x, out)

    def _fused_call(self, x, out):
        (xv,) = _views(self.layout, x)
        (ov,) = _views(self.layout, out)
        # one task per image: a single image gains nothing from waking another thread
        return channel_reduce.se_inference_cl.bind(xv, *self.fused[:4], ov, *self.fused[4:],
                                                   work_ns=x.size * 0.6 if x.shape[0] > 1 else 0)

    def __call__(self, x, out=None):
        if out is None:
            out = _empty_like(x, self.layout)
        if self.fused is not None:
            self._fused_call(x, out)()
            return out
        (xv,) = _views(self.layout, x)
        (ov,) = _views(self.layout, out)
        self.gate(xv, self.gates(x), ov, work_ns=x.size * 0.3)
        return out


def _pooled(x, layout):
    """[N, C] channel means of x (``layout`` from `_layout`)."""
    n, c = x.shape[:2]
    pooled = np.empty((n, c), dtype=x.dtype)
    means = channel_reduce.channel_means if layout == "channels_last" else channel_reduce.plane_means
    means(*_views(layout, x), pooled, work_ns=x.size * 0.3)
    return pooled


def _gated(x, gate, layout):
    """x * gate[n, c] through the compiled gate, in x's layout."""
    out = _empty_like(x, layout)
    gate_forward = channel_reduce.gate_forward if layout == "channels_last" else channel_reduce.plane_gate
    gate_forward(*_views(layout, x), np.ascontiguousarray(gate, dtype=x.dtype), *_views(layout, out),
                 work_ns=x.size * 0.3)
    return out


def se_forward(x, w1, b1, w2, b2, activation="relu", scale_activation="sigmoid"):
    """Returns (out, cache); ``cache`` holds the small [N, C] / [N, S] intermediates for backward."""
    n, c = x.shape[:2]
    layout = _layout(x)
    pooled = global_avg_pool2d(x).reshape(n, c) if layout is None else _pooled(x, layout)
    z1 = pooled @ _matrix(w1).T
    if b1 is not None:
        z1 += b1
    a1 = A.forward(z1, activation)
    z2 = a1 @ _matrix(w2).T
    if b2 is not None:
        z2 += b2
    gate = A.forward(z2, scale_activation)
    if layout is None:
        return x * gate.reshape(n, c, 1, 1), (pooled, z1, a1, z2, gate)
    return _gated(x, gate, layout), (pooled, z1, a1, z2, gate)


def se_backward(grad, x, w1, w2, cache, activation="relu", scale_activation="sigmoid"):
    """Gradients (x, w1, b1, w2, b2) of `se_forward`."""
    pooled, z1, a1, z2, gate = cache
    n, c, h, w = x.shape
    dtype = x.dtype
    layout = _layout(x)
    if layout is not None:
        grad = like(grad.astype(dtype, copy=False), x)
        g3, x3 = _views(layout, grad, x)
        grad_gate64 = np.empty((n, c), dtype=np.float64)
        sums = channel_reduce.gated_sums if layout == "channels_last" else channel_reduce.plane_gated_sums
        sums(g3, x3, grad_gate64, work_ns=x.size * 0.4)
        grad_gate = grad_gate64.astype(dtype)
    else:
        grad_gate = (grad * x).sum(axis=(2, 3), dtype=np.float64).astype(dtype)
    g2 = _activation_backward(grad_gate, z2, gate, scale_activation)
    grad_w2 = (g2.T @ a1).reshape(w2.shape)
    grad_b2 = g2.sum(axis=0)
    g1 = _activation_backward(g2 @ _matrix(w2), z1, a1, activation)
    grad_w1 = (g1.T @ pooled).reshape(w1.shape)
    grad_b1 = g1.sum(axis=0)
    grad_pooled = (g1 @ _matrix(w1)) / (h * w)
    if layout is not None:
        gx = _empty_like(x, layout)
        backward = (channel_reduce.gate_backward_input if layout == "channels_last"
                    else channel_reduce.plane_gate_backward_input)
        backward(g3, np.ascontiguousarray(gate, dtype=dtype), np.ascontiguousarray(grad_pooled, dtype=dtype),
                 *_views(layout, gx), work_ns=x.size * 0.4)
    else:
        gx = grad * gate.reshape(n, c, 1, 1) + grad_pooled.reshape(n, c, 1, 1).astype(dtype, copy=False)
    return gx, grad_w1, grad_b1, grad_w2, grad_b2
