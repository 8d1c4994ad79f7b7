"""`Linear`: the fully connected layer with torch's init and repr."""
import math

from . import functional as F
from . import init
from .module import Module
from .parameter import Parameter, factory_array


class Linear(Module):
    """``torch.nn.Linear``: ``y = x W^T + b`` with weight ``[out_features, in_features]``."""

    def __init__(self, in_features, out_features, bias=True, device=None, dtype=None):
        super().__init__()
        self.in_features = in_features
        self.out_features = out_features
        self.weight = Parameter(factory_array((out_features, in_features), device, dtype))
        if bias:
            self.bias = Parameter(factory_array((out_features,), device, dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def forward(self, input):
        return F.linear(input, self.weight, self.bias)

    def extra_repr(self):
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}"
