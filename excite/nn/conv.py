"""`Conv2d`: 2-D convolution with torch's constructor, parameter names, init and repr."""
import math

from ..errors import InvalidArgumentError
from . import functional as F
from ._utils import pair
from . import init
from .module import Module
from .parameter import Parameter, factory_array


class Conv2d(Module):
    """``torch.nn.Conv2d``: weight ``[out, in/groups, kH, kW]``, optional bias ``[out]``.

    Only ``padding_mode='zeros'`` is implemented; the other torch modes raise InvalidArgumentError.
    """

    def __init__(self, in_channels, out_channels, kernel_size, stride=1, padding=0, dilation=1, groups=1,
                 bias=True, padding_mode="zeros", device=None, dtype=None):
        super().__init__()
        kernel_size, stride, dilation = pair(kernel_size), pair(stride), pair(dilation)
        padding = padding if isinstance(padding, str) else pair(padding)
        if not isinstance(groups, int) or groups <= 0:
            raise InvalidArgumentError(f"groups must be a positive integer, got {groups!r}")
        if in_channels % groups != 0:
            raise InvalidArgumentError(f"in_channels must be divisible by groups, got in_channels={in_channels}, "
                                       f"groups={groups}")
        if out_channels % groups != 0:
            raise InvalidArgumentError(f"out_channels must be divisible by groups, got out_channels={out_channels}, "
                                       f"groups={groups}")
        if isinstance(padding, str):
            if padding not in ("same", "valid"):
                raise InvalidArgumentError(f"Invalid padding string {padding!r}, should be one of {{'same', 'valid'}}")
            if padding == "same" and any(s != 1 for s in stride):
                raise InvalidArgumentError("padding='same' is not supported for strided convolutions")
        if padding_mode != "zeros":
            raise InvalidArgumentError(
                f"padding_mode must be 'zeros' (the only mode excite implements), but got padding_mode='{padding_mode}'"
            )
        self.in_channels = in_channels
        self.out_channels = out_channels
        self.kernel_size = kernel_size
        self.stride = stride
        self.padding = padding
        self.dilation = dilation
        self.transposed = False
        self.output_padding = (0, 0)
        self.groups = groups
        self.padding_mode = padding_mode
        self.weight = Parameter(factory_array((out_channels, in_channels // groups, *kernel_size), device, dtype))
        if bias:
            self.bias = Parameter(factory_array((out_channels,), device, dtype))
        else:
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        init.kaiming_uniform_(self.weight, a=math.sqrt(5))
        if self.bias is not None:
            fan_in, _ = init._calculate_fan_in_and_fan_out(self.weight)
            bound = 1 / math.sqrt(fan_in) if fan_in > 0 else 0
            init.uniform_(self.bias, -bound, bound)

    def _conv_forward(self, input, weight, bias):
        return F.conv2d(input, weight, bias, self.stride, self.padding, self.dilation, self.groups)

    def forward(self, input):
        return self._conv_forward(input, self.weight, self.bias)

    def extra_repr(self):
        s = "{in_channels}, {out_channels}, kernel_size={kernel_size}, stride={stride}"
        if self.padding != (0,) * len(self.padding):
            s += ", padding={padding}"
        if self.dilation != (1,) * len(self.dilation):
            s += ", dilation={dilation}"
        if self.groups != 1:
            s += ", groups={groups}"
        if self.bias is None:
            s += ", bias=False"
        return s.format(**self.__dict__)
