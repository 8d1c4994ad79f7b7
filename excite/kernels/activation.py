"""Elementwise activation kernels and their backward rules, on plain arrays.

Large float32/float64 arrays go through compiled one-pass kernels (`elementwise`): no
temporaries, vectorised exp. Small arrays (the SE gate's [N, C, 1, 1], logits) stay in NumPy,
where a call costs less than a parallel launch. Outputs keep the input's memory layout.
"""
import numpy as np

from . import activation_kinds
from . import buffers
from .layout import flat, like
from .threads import LazyModule

elementwise = LazyModule("elementwise")  # compiled kernels: numba loads on first use

COMPILED_MIN_SIZE = 1 << 15
NS_PER_ELEMENT = 0.6  # single-thread cost estimate, to decide on threads (`threads.PARALLEL_MIN_NS`)


def _compiled(x):
    return x.size >= COMPILED_MIN_SIZE and x.dtype in (np.float32, np.float64)


def _kinds():
    return activation_kinds


def _unary(x, kind_name, out=None):
    """act(x) through the compiled kernel; ``out`` (same layout as x, may be x) receives it."""
    kind = _kinds().KINDS[kind_name]
    if out is x and flat(x) is not None:
        elementwise.activation_inplace(flat(x), kind, work_ns=x.size * NS_PER_ELEMENT)
        return out
    src = flat(x)
    if src is None:
        x = np.ascontiguousarray(x)
        src = x.reshape(-1)
    if out is None:
        out = buffers.empty_like(x)
    elementwise.activation_forward(src, flat(out), kind, work_ns=x.size * NS_PER_ELEMENT)
    return out


def _binary(grad, saved, kind_code):
    src = flat(saved)
    if src is None:
        saved = np.ascontiguousarray(saved)
        src = saved.reshape(-1)
    grad = like(grad.astype(saved.dtype, copy=False), saved)
    out = buffers.empty_like(saved)
    elementwise.activation_backward(flat(grad), src, flat(out), kind_code, work_ns=grad.size * NS_PER_ELEMENT)
    return out


def activate(x, kind_name, out=None):
    """Activation by name ('relu', 'hardswish', ..., None for identity); ``out=x`` works in place."""
    if kind_name in (None, "identity"):
        return x if out is None else out
    if _compiled(x):
        return _unary(x, kind_name, out)
    y = _NUMPY_FORWARD[kind_name](x)
    if out is None:
        return y
    out[...] = y
    return out


def relu(x):
    return _unary(x, "relu") if _compiled(x) else np.maximum(x, 0)


def relu_backward(grad, x):
    return _binary(grad, x, _kinds().RELU) if _compiled(x) else np.where(x <= 0, 0, grad).astype(grad.dtype, copy=False)


def relu6(x):
    return _unary(x, "relu6") if _compiled(x) else np.clip(x, 0, 6)


def relu6_backward(grad, x):
    return _binary(grad, x, _kinds().RELU6) if _compiled(x) else grad * ((x > 0) & (x < 6))


def sigmoid(x):
    if _compiled(x):
        return _unary(x, "sigmoid")
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def sigmoid_backward(grad, y):
    """Backward of sigmoid written in terms of its output ``y``."""
    return _binary(grad, y, _kinds().SIGMOID_OF_OUTPUT) if _compiled(y) else grad * (y * (1 - y))


def tanh(x):
    return np.tanh(x)


def tanh_backward(grad, y):
    return grad * (1 - y * y)


def hardsigmoid(x):
    if _compiled(x):
        return _unary(x, "hardsigmoid")
    return np.minimum(np.maximum(x + 3, 0), 6) / 6


def hardsigmoid_backward(grad, x):
    if _compiled(x):
        return _binary(grad, x, _kinds().HARDSIGMOID)
    return grad * (((x > -3) & (x < 3)) / 6).astype(grad.dtype, copy=False)


def hardswish(x):
    if _compiled(x):
        return _unary(x, "hardswish")
    return x * np.minimum(np.maximum(x + 3, 0), 6) / 6


def hardswish_backward(grad, x):
    if _compiled(x):
        return _binary(grad, x, _kinds().HARDSWISH)
    # torch 2.14: 0 for x <= -3, x/3 + 0.5 for -3 < x < 3, 1 for x >= 3 (NaN stays NaN)
    slope = np.where(x <= -3, 0, np.where(x >= 3, 1, x / 3 + 0.5))
    return grad * slope.astype(grad.dtype, copy=False)


def silu(x):
    if _compiled(x):
        return _unary(x, "silu")
    with np.errstate(over="ignore"):
        return x / (1 + np.exp(-x))


def silu_backward(grad, x):
    if _compiled(x):
        return _binary(grad, x, _kinds().SILU)
    with np.errstate(over="ignore"):
        s = 1 / (1 + np.exp(-x))
    return grad * (s * (1 + x * (1 - s)))


_NUMPY_FORWARD = {"relu": lambda x: np.maximum(x, 0), "relu6": lambda x: np.clip(x, 0, 6),
                  "sigmoid": sigmoid, "hardsigmoid": hardsigmoid, "hardswish": hardswish, "silu": silu}


def softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def softmax_backward(grad, y, axis):
    return y * (grad - (grad * y).sum(axis=axis, keepdims=True))


def log_softmax(x, axis):
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def log_softmax_backward(grad, y, axis):
    return grad - np.exp(y) * grad.sum(axis=axis, keepdims=True)
