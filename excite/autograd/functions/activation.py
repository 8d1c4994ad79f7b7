"""Differentiable activations: one Function for every registered elementwise activation, and softmax."""
from ...kernels import activation as K
from ...kernels import activations
from ..function import Function
from .reduction import normalize_dims


class Activation(Function):
    """``act(x)`` for the registry's activation ``name`` (`excite.kernels.activations`).

    Saves the output when the record has a derivative in terms of it (sigmoid, tanh), else the input.
    """

    def forward(self, x, name):
        self.activation = activations.get(name)
        y = K.forward(x, name)
        if self.needs_input_grad[0]:
            self.save_for_backward(y if self.activation.saves_output else x)
        return y

    def backward(self, g):
        return (K.backward(g, self.saved_tensors[0], self.activation.name),)

    def name(self):
        record = self.__dict__.get("activation")
        return (record.module if record is not None else "Activation") + "Backward"


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
