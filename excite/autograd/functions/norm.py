"""Differentiable batch normalisation (training statistics and eval affine)."""
from ...kernels import norm as K
from ..function import Function


class BatchNorm(Function):
    def forward(self, x, running_mean, running_var, weight, bias, training, momentum, eps):
        self.training = training
        self.has_weight, self.has_bias = weight is not None, bias is not None
        if training:
            y, mean, var, invstd, xhat = K.batch_norm_train(x, weight, bias, eps)
            if running_mean is not None:
                count = x.size // x.shape[1]
                K.batch_norm_update_stats(running_mean, running_var, mean, var, count, momentum)
            self.save_for_backward(xhat, invstd, weight)
        else:
            y, invstd = K.batch_norm_eval(x, running_mean, running_var, weight, bias, eps)
            self.save_for_backward(x, running_mean.copy(), invstd, weight)
        return y

    def backward(self, g):
        if self.training:
            xhat, invstd, weight = self.saved_tensors
            gx, gw, gb = K.batch_norm_train_backward(g, xhat, invstd, weight)
        else:
            x, running_mean, invstd, weight = self.saved_tensors
            gx, gw, gb = K.batch_norm_eval_backward(g, x, running_mean, invstd, weight)
        return (gx, None, None, gw if self.has_weight else None, gb if self.has_bias else None)
