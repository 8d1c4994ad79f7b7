"""Differentiable pooling: adaptive average, average and max pooling over H and W."""
from ...kernels import pooling as K
from ...kernels.layout import is_channels_last
from ..function import Function


class AdaptiveAvgPool2d(Function):
    def forward(self, x, output_size):
        self.shape = x.shape
        self.channels_last = is_channels_last(x)
        return K.adaptive_avg_pool2d(x, output_size)

    def backward(self, g):
        return (K.adaptive_avg_pool2d_backward(g, self.shape, self.channels_last),)


class AvgPool2d(Function):
    def forward(self, x, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override):
        self.shape = x.shape
        self.args = (kernel, stride, padding, count_include_pad, divisor_override)
        return K.avg_pool2d(x, kernel, stride, padding, ceil_mode, count_include_pad, divisor_override)

    def backward(self, g):
        return (K.avg_pool2d_backward(g, self.shape, *self.args),)


class MaxPool2d(Function):
    def forward(self, x, kernel, stride, padding, dilation, ceil_mode):
        self.shape = x.shape
        self.args = (kernel, stride, padding, dilation)
        out, self.idx = K.max_pool2d(x, kernel, stride, padding, dilation, ceil_mode)
        return out

    def backward(self, g):
        return (K.max_pool2d_backward(g, self.shape, self.idx, *self.args),)
