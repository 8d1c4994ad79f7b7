"""Differentiable activations; each pairs a kernel with its backward kernel."""
from ...kernels import activation as K
from ..function import Function
from .reduction import normalize_dims


class Relu(Function):
    def forward(self, x):
        self.save_for_backward(x)
        return K.relu(x)

    def backward(self, g):
        return (K.relu_backward(g, self.saved_tensors[0]),)


class Relu6(Function):
    def forward(self, x):
        self.save_for_backward(x)
        return K.relu6(x)

    def backward(self, g):
        return (K.relu6_backward(g, self.saved_tensors[0]),)


class Sigmoid(Function):
    def forward(self, x):
        y = K.sigmoid(x)
        self.save_for_backward(y)
        return y

    def backward(self, g):
        return (K.sigmoid_backward(g, self.saved_tensors[0]),)


class Tanh(Function):
    def forward(self, x):
        y = K.tanh(x)
        self.save_for_backward(y)
        return y

    def backward(self, g):
        return (K.tanh_backward(g, self.saved_tensors[0]),)


class Hardsigmoid(Function):
    def forward(self, x):
        self.save_for_backward(x)
        return K.hardsigmoid(x)

    def backward(self, g):
        return (K.hardsigmoid_backward(g, self.saved_tensors[0]),)


class Hardswish(Function):
    def forward(self, x):
        self.save_for_backward(x)
        return K.hardswish(x)

    def backward(self, g):
        return (K.hardswish_backward(g, self.saved_tensors[0]),)


class Silu(Function):
    def forward(self, x):
        self.save_for_backward(x)
        return K.silu(x)

    def backward(self, g):
        return (K.silu_backward(g, self.saved_tensors[0]),)


class Softmax(Function):
    def forward(self, x, dim):
        (self.axis,) = normalize_dims(dim, x.ndim, "softmax")
        y = K.softmax(x, self.axis)
        self.save_for_backward(y)
        return y

    def backward(self, g):
        return (K.softmax_backward(g, self.saved_tensors[0], self.axis),)


class LogSoftmax(Function):
    def forward(self, x, dim):
        (self.axis,) = normalize_dims(dim, x.ndim, "log_softmax")
        y = K.log_softmax(x, self.axis)
        self.save_for_backward(y)
        return y

    def backward(self, g):
        return (K.log_softmax_backward(g, self.saved_tensors[0], self.axis),)
