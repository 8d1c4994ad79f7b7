"""Elementwise activation kernels and their backward rules, on plain arrays."""
import numpy as np


def relu(x):
    return np.maximum(x, 0)


def relu_backward(grad, x):
    return grad * (x > 0)


def relu6(x):
    return np.clip(x, 0, 6)


def relu6_backward(grad, x):
    return grad * ((x > 0) & (x < 6))


def sigmoid(x):
    with np.errstate(over="ignore"):
        return 1.0 / (1.0 + np.exp(-x))


def sigmoid_backward(grad, y):
    """Backward of sigmoid written in terms of its output ``y``."""
    return grad * y * (1 - y)


def tanh(x):
    return np.tanh(x)


def tanh_backward(grad, y):
    return grad * (1 - y * y)


def hardsigmoid(x):
    return np.clip(x / 6 + 0.5, 0, 1)


def hardsigmoid_backward(grad, x):
    return grad * (((x > -3) & (x < 3)) / 6).astype(grad.dtype, copy=False)


def hardswish(x):
    return x * np.clip(x + 3, 0, 6) / 6


def hardswish_backward(grad, x):
    # torch: 0 below -3, x/3 + 0.5 on [-3, 3], 1 above 3
    slope = np.where(x < -3, 0, np.where(x <= 3, x / 3 + 0.5, 1))
    return grad * slope.astype(grad.dtype, copy=False)


def silu(x):
    return x * sigmoid(x)


def silu_backward(grad, x):
    s = sigmoid(x)
    return grad * s * (1 + x * (1 - s))


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
