"""Differentiable conv2d and linear."""
import numpy as np

from ...kernels import blas
from ...kernels import conv as K
from ...kernels import pointwise
from ..function import Function


class Conv2d(Function):
    def forward(self, x, w, b, stride, padding, dilation, groups):
        self.save_for_backward(x, w)
        self.args = (stride, padding, dilation, groups)
        self.has_bias = b is not None
        return K.conv2d_forward(x, w, b, stride, padding, dilation, groups)

    def backward(self, g):
        x, w = self.saved_tensors
        stride, padding, dilation, groups = self.args
        need = self.needs_input_grad
        gx = K.conv2d_backward_input(g, x.shape, w, stride, padding, dilation, groups) if need[0] else None
        gw = K.conv2d_backward_weight(g, x, w.shape, stride, padding, dilation, groups) if need[1] else None
        gb = K.conv2d_backward_bias(g) if self.has_bias and need[2] else None
        return gx, gw, gb


def _matmul(a, b):
    """a @ b; 2-D float products run on excite's threads (`kernels.blas`)."""
    if a.ndim == 2 and b.ndim == 2 and a.dtype == b.dtype and a.dtype.kind == "f":
        return blas.matmul(a, b)
    return np.matmul(a, b)


class Linear(Function):
    """``x @ w.T + b``; 2-D float32/float64 products run on the compiled kernels of `pointwise` (the
    bias in their epilogue), others through NumPy."""

    def forward(self, x, w, b):
        self.save_for_backward(x, w)
        self.has_bias = b is not None
        if x.ndim == 2 and pointwise.supported(x, w):
            return pointwise.pointwise(np.ascontiguousarray(x), w, None, b)
        y = _matmul(x, w.T)
        if b is not None:
            y += b
        return y

    def backward(self, g):
        x, w = self.saved_tensors
        need = self.needs_input_grad
        compiled = x.ndim == 2 and pointwise.supported(x, w) and g.dtype == x.dtype
        if compiled:
            g = np.ascontiguousarray(g)
        gx = None
        if need[0]:
            gx = pointwise.input_gradient(g, w) if compiled else _matmul(g, w)
        gw = None
        if need[1] and compiled:
            gw = pointwise.weight_gradient(g, np.ascontiguousarray(x))
        elif need[1]:
            g2 = g.reshape(-1, g.shape[-1])
            gw = _matmul(g2.T, x.reshape(-1, x.shape[-1]))
        gb = g.reshape(-1, g.shape[-1]).sum(axis=0) if self.has_bias and need[2] else None
        return gx, gw, gb
