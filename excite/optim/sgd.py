"""SGD with momentum, dampening, Nesterov and weight decay (torch.optim.SGD's update)."""
import numpy as np

from ..errors import InvalidArgumentError
from ..tensor import Tensor
from .optimizer import Optimizer


class SGD(Optimizer):
    """Stochastic gradient descent, as torch.optim.SGD.

    With momentum the first step's buffer is the gradient itself (not ``(1 - dampening) * grad``);
    Nesterov uses ``grad + momentum * buf``. ``foreach``/``fused`` are accepted for signature
    compatibility; NumPy has one code path.
    """

    def __init__(self, params, lr=1e-3, momentum=0, dampening=0, weight_decay=0, nesterov=False, *,
                 maximize=False, foreach=None, differentiable=False, fused=None):
        if lr < 0.0:
            raise InvalidArgumentError(f"Invalid learning rate: {lr}")
        if momentum < 0.0:
            raise InvalidArgumentError(f"Invalid momentum value: {momentum}")
        if weight_decay < 0.0:
            raise InvalidArgumentError(f"Invalid weight_decay value: {weight_decay}")
        if nesterov and (momentum <= 0 or dampening != 0):
            raise InvalidArgumentError("Nesterov momentum requires a momentum and zero dampening")
        if differentiable:
            raise InvalidArgumentError("differentiable=True is not supported: excite optimizers update arrays in place")
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay,
                        nesterov=nesterov, maximize=maximize, foreach=foreach, differentiable=differentiable,
                        fused=fused)
        super().__init__(params, defaults)

    def _update(self, param, grad, group):
        if group["maximize"]:
            grad = -grad
        if group["weight_decay"] != 0:
            grad = grad + group["weight_decay"] * param.data
        momentum = group["momentum"]
        if momentum != 0:
            state = self.state[param]
            buf = state.get("momentum_buffer")
            if buf is None:
                buf = Tensor(np.array(grad, copy=True))
                state["momentum_buffer"] = buf
            else:
                buf.data *= momentum
                buf.data += (1 - group["dampening"]) * grad
            grad = grad + momentum * buf.data if group["nesterov"] else buf.data
        param.data -= group["lr"] * grad
