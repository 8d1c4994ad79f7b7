"""Differentiable layer normalisation."""
from ...kernels import layer_norm as K
from ..function import Function


class LayerNorm(Function):
    """``layer_norm(x)`` over the last ``normalized_ndim`` dims, with optional weight and bias."""

    def forward(self, x, weight, bias, normalized_ndim, eps):
        self.normalized_ndim = normalized_ndim
        self.has_weight, self.has_bias = weight is not None, bias is not None
        y, mean, rstd = K.layer_norm_forward(x, normalized_ndim, weight, bias, eps)
        if any(self.needs_input_grad):
            self.save_for_backward(x, weight)
            self.stats = (mean, rstd)
        return y

    def backward(self, g):
        x, weight = self.saved_tensors
        mean, rstd = self.stats
        need = self.needs_input_grad
        gx, gw, gb = K.layer_norm_backward(g, x, mean, rstd, self.normalized_ndim, weight,
                                           self.has_weight and need[1], self.has_bias and need[2])
        return gx if need[0] else None, gw, gb
