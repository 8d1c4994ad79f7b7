"""Adam and AdamW (decoupled weight decay), torch.optim's single-tensor update."""
import numpy as np

from ..errors import InvalidArgumentError
from .optimizer import Optimizer, step_state, zeros_state


def _lerp_(start, end, weight):
    # torch's lerp switches formula at weight 0.5 to stay exact at both ends; follow it for parity
    if weight < 0.5:
        start += weight * (end - start)
    else:
        start[...] = end - (end - start) * (1 - weight)


class Adam(Optimizer):
    """Adam, as torch.optim.Adam: bias-corrected moments, optional AMSGrad.

    ``weight_decay`` is L2 added to the gradient unless ``decoupled_weight_decay`` (then it
    is AdamW). ``foreach``/``capturable``/``fused`` are accepted for signature compatibility.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=0, amsgrad=False, *,
                 foreach=None, maximize=False, capturable=False, differentiable=False, fused=None,
                 decoupled_weight_decay=False):
        if not 0.0 <= lr:
            raise InvalidArgumentError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise InvalidArgumentError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= betas[0] < 1.0:
            raise InvalidArgumentError(f"Invalid beta parameter at index 0: {betas[0]}")
        if not 0.0 <= betas[1] < 1.0:
            raise InvalidArgumentError(f"Invalid beta parameter at index 1: {betas[1]}")
        if not 0.0 <= weight_decay:
            raise InvalidArgumentError(f"Invalid weight_decay value: {weight_decay}")
        if differentiable:
            raise InvalidArgumentError("differentiable=True is not supported: excite optimizers update arrays in place")
        defaults = dict(lr=lr, betas=(float(betas[0]), float(betas[1])), eps=eps, weight_decay=weight_decay,
                        amsgrad=amsgrad, maximize=maximize, foreach=foreach, capturable=capturable,
                        differentiable=differentiable, fused=fused, decoupled_weight_decay=decoupled_weight_decay)
        super().__init__(params, defaults)

    def _update(self, param, grad, group):
        state = self.state[param]
        if len(state) == 0:
            state["step"] = step_state()
            state["exp_avg"] = zeros_state(param)
            state["exp_avg_sq"] = zeros_state(param)
            if group["amsgrad"]:
                state["max_exp_avg_sq"] = zeros_state(param)
        if group["maximize"]:
            grad = -grad
        beta1, beta2 = group["betas"]
        lr, weight_decay = group["lr"], group["weight_decay"]
        state["step"].data += 1
        step = float(state["step"].data)
        if weight_decay != 0:
            if group["decoupled_weight_decay"]:
                param.data *= 1 - lr * weight_decay
            else:
                grad = grad + weight_decay * param.data
        exp_avg, exp_avg_sq = state["exp_avg"].data, state["exp_avg_sq"].data
        _lerp_(exp_avg, grad, 1 - beta1)
        exp_avg_sq *= beta2
        exp_avg_sq += (1 - beta2) * grad * grad
        bias_correction1 = 1 - beta1 ** step
        bias_correction2 = 1 - beta2 ** step
        step_size = lr / bias_correction1
        bias_correction2_sqrt = bias_correction2 ** 0.5
        if group["amsgrad"]:
            max_exp_avg_sq = state["max_exp_avg_sq"].data
            np.maximum(max_exp_avg_sq, exp_avg_sq, out=max_exp_avg_sq)
            denom = max_exp_avg_sq ** 0.5 / bias_correction2_sqrt + group["eps"]
        else:
            denom = exp_avg_sq ** 0.5 / bias_correction2_sqrt + group["eps"]
        param.data -= step_size * (exp_avg / denom)


class AdamW(Adam):
    """AdamW, as torch.optim.AdamW: Adam whose weight decay shrinks the weights directly
    (``param *= 1 - lr * weight_decay``) instead of entering the moments. Default decay 1e-2."""

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-8, weight_decay=1e-2, amsgrad=False, *,
                 maximize=False, foreach=None, capturable=False, differentiable=False, fused=None):
        super().__init__(params, lr, betas, eps, weight_decay, amsgrad, foreach=foreach, maximize=maximize,
                         capturable=capturable, differentiable=differentiable, fused=fused,
                         decoupled_weight_decay=True)

    def load_state_dict(self, state_dict):
        super().load_state_dict(state_dict)
        for group in self.param_groups:
            group["decoupled_weight_decay"] = True
