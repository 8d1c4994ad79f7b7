"""Differentiable fused Squeeze-and-Excitation block: pool -> fc1 -> act -> fc2 -> gate -> multiply."""
from ...kernels import se as K
from ..function import Function


class SqueezeExcitation(Function):
    """``x * scale_activation(fc2(activation(fc1(avgpool(x)))))`` with fc weights [S, C, 1, 1] / [C, S, 1, 1].

    Inputs: (x, fc1_weight, fc1_bias, fc2_weight, fc2_bias); activations by registry name
    (`excite.kernels.activations`).
    """

    def forward(self, x, w1, b1, w2, b2, activation="relu", scale_activation="sigmoid"):
        self.activations = (activation, scale_activation)
        self.has_bias = (b1 is not None, b2 is not None)
        if not any(self.needs_input_grad):
            return K.se_inference(x, w1, b1, w2, b2, activation, scale_activation)
        out, cache = K.se_forward(x, w1, b1, w2, b2, activation, scale_activation)
        self.save_for_backward(x, w1, w2)
        self.cache = cache
        return out

    def backward(self, g):
        x, w1, w2 = self.saved_tensors
        gx, gw1, gb1, gw2, gb2 = K.se_backward(g, x, w1, w2, self.cache, *self.activations)
        need = self.needs_input_grad
        return (gx if need[0] else None, gw1 if need[1] else None, gb1 if self.has_bias[0] and need[2] else None,
                gw2 if need[3] else None, gb2 if self.has_bias[1] and need[4] else None)
