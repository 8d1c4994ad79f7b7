"""RMSprop with optional centring and momentum (torch.optim.RMSprop's update)."""
from ..errors import InvalidArgumentError
from .optimizer import Optimizer, step_state, zeros_state


class RMSprop(Optimizer):
    """RMSprop, as torch.optim.RMSprop (eps is added after the square root, outside it).

    ``centered`` divides by the estimated variance ``E[g^2] - E[g]^2`` instead of ``E[g^2]``;
    with ``momentum`` the scaled gradient feeds a velocity buffer.
    """

    def __init__(self, params, lr=1e-2, alpha=0.99, eps=1e-8, weight_decay=0, momentum=0, centered=False,
                 capturable=False, foreach=None, maximize=False, differentiable=False):
        if not 0.0 <= lr:
            raise InvalidArgumentError(f"Invalid learning rate: {lr}")
        if not 0.0 <= eps:
            raise InvalidArgumentError(f"Invalid epsilon value: {eps}")
        if not 0.0 <= momentum:
            raise InvalidArgumentError(f"Invalid momentum value: {momentum}")
        if not 0.0 <= weight_decay:
            raise InvalidArgumentError(f"Invalid weight_decay value: {weight_decay}")
        if not 0.0 <= alpha:
            raise InvalidArgumentError(f"Invalid alpha value: {alpha}")
        if differentiable:
            raise InvalidArgumentError("differentiable=True is not supported: excite optimizers update arrays in place")
        defaults = dict(lr=lr, momentum=momentum, alpha=alpha, eps=eps, centered=centered,
                        weight_decay=weight_decay, capturable=capturable, foreach=foreach, maximize=maximize,
                        differentiable=differentiable)
        super().__init__(params, defaults)

    def _update(self, param, grad, group):
        state = self.state[param]
        if len(state) == 0:
            state["step"] = step_state()
            state["square_avg"] = zeros_state(param)
            if group["momentum"] > 0:
                state["momentum_buffer"] = zeros_state(param)
            if group["centered"]:
                state["grad_avg"] = zeros_state(param)
        if group["maximize"]:
            grad = -grad
        state["step"].data += 1
        if group["weight_decay"] != 0:
            grad = grad + group["weight_decay"] * param.data
        alpha = group["alpha"]
        square_avg = state["square_avg"].data
        square_avg *= alpha
        square_avg += (1 - alpha) * grad * grad
        if group["centered"]:
            grad_avg = state["grad_avg"].data
            grad_avg += (1 - alpha) * (grad - grad_avg)  # torch's lerp_
            avg = (square_avg - grad_avg * grad_avg) ** 0.5
        else:
            avg = square_avg ** 0.5
        avg += group["eps"]
        if group["momentum"] > 0:
            buf = state["momentum_buffer"].data
            buf *= group["momentum"]
            buf += grad / avg
            param.data -= group["lr"] * buf
        else:
            param.data -= group["lr"] * (grad / avg)
