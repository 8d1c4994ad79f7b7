"""Differentiable batch normalisation (training statistics or eval affine), optionally fused with an activation."""
from ...kernels import norm as K
from ..function import Function


class BatchNorm(Function):
    """``act(batch_norm(x))``; ``activation`` is None or a name such as 'relu', 'hardswish', 'silu'.

    Saves the input (not the normalised output) and recomputes the pre-activation in backward,
    so the fused pair keeps one array alive instead of two.
    """

    def forward(self, x, running_mean, running_var, weight, bias, training, momentum, eps, activation=None):
        self.training = training
        self.activation = activation
        self.has_weight, self.has_bias = weight is not None, bias is not None
        if training:
            y, mean, var, scale, shift, invstd = K.batch_norm_train(x, weight, bias, eps, activation)
            if running_mean is not None:
                count = x.size // x.shape[1]
                K.batch_norm_update_stats(running_mean, running_var, mean, var, count, momentum)
        else:
            y, scale, shift, invstd = K.batch_norm_eval(x, running_mean, running_var, weight, bias, eps,
                                                        activation)
            mean = running_mean.astype("float64")  # a copy: later in-place updates must not leak in
        if any(self.needs_input_grad):
            self.save_for_backward(x, weight)
            self.stats = (scale, shift, mean, invstd)
        return y

    def backward(self, g):
        x, weight = self.saved_tensors
        scale, shift, mean, invstd = self.stats
        gx, gw, gb = K.batch_norm_backward(g, x, scale, shift, mean, invstd, weight, self.training,
                                           self.activation)
        return (gx if self.needs_input_grad[0] else None, None, None,
                gw if self.has_weight else None, gb if self.has_bias else None)
