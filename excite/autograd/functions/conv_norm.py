"""Differentiable fused convolution + batch norm + activation: one op for torchvision's Conv2dNormActivation."""
from ...kernels import conv as K
from ...kernels import norm as N
from ..function import Function
from .conv import Conv2d
from .norm import BatchNorm


class ConvNormActivation(Function):
    """``act(batch_norm(conv2d(x, w, b)))`` with the arguments of `Conv2d` and `BatchNorm` (``activation``
    a registry name or None).

    Inference (batch norm with running statistics and nothing to differentiate): one kernel call,
    batch norm folded into the convolution's epilogue. Otherwise the convolution, then batch norm
    and the activation as one pass (`BatchNorm`), and backward through both.
    """

    def forward(self, x, w, b, running_mean, running_var, weight, bias, stride, padding, dilation, groups,
                training, momentum, eps, activation=None):
        if not training and not any(self.needs_input_grad):
            scale, shift = N.inference_affine(running_mean, running_var, weight, bias, eps, conv_bias=b,
                                              dtype=K.common_dtype(x, w))
            return K.conv2d_forward(x, w, None, stride, padding, dilation, groups, scale, shift, activation)
        need = self.needs_input_grad
        conv = Conv2d.__new__(Conv2d)
        conv.needs_input_grad = need[:3]
        y = conv.forward(x, w, b, stride, padding, dilation, groups)
        norm = BatchNorm.__new__(BatchNorm)
        norm.needs_input_grad = (any(need[:3]), False, False, need[5], need[6])
        z = norm.forward(y, running_mean, running_var, weight, bias, training, momentum, eps, activation)
        self.parts = (conv, norm)
        return z

    def backward(self, g):
        conv, norm = self.parts
        gy, _, _, g_weight, g_bias = norm.backward(g)
        gx, gw, gb = conv.backward(gy) if gy is not None else (None, None, None)
        return gx, gw, gb, None, None, g_weight, g_bias
