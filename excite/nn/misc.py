"""Small building blocks: `Identity`, `Flatten`, `StochasticDepth` and torchvision's `Conv2dNormActivation`."""
from collections.abc import Iterable
from itertools import repeat

import numpy as np

from ..autograd import function as _function
from ..autograd import functions as fn
from ..autograd.functions import output_size
from ..errors import InvalidArgumentError
from ..random import generator
from ._utils import pair
from .activation import ReLU, module_record
from .container import Sequential
from .conv import Conv2d
from .module import Module
from .norm import BatchNorm2d


class Identity(Module):
    """Returns its input; accepts and ignores any constructor arguments (as torch's does)."""

    def __init__(self, *args, **kwargs):
        super().__init__()

    def forward(self, input):
        return input


class Flatten(Module):
    def __init__(self, start_dim=1, end_dim=-1):
        super().__init__()
        self.start_dim = start_dim
        self.end_dim = end_dim

    def forward(self, input):
        return input.flatten(self.start_dim, self.end_dim)

    def extra_repr(self):
        return f"start_dim={self.start_dim}, end_dim={self.end_dim}"


def stochastic_depth(input, p, mode, training=True):
    """``torchvision.ops.stochastic_depth``: zero whole rows ('row') or the whole batch ('batch') with probability p.

    Kept values are divided by the survival rate ``1 - p``; identity when not training or p == 0.
    """
    if p < 0.0 or p > 1.0:
        raise InvalidArgumentError(f"drop probability has to be between 0 and 1, but got {p}")
    if mode not in ("batch", "row"):
        raise InvalidArgumentError(f"mode has to be either 'batch' or 'row', but got {mode}")
    if not training or p == 0.0:
        return input
    survival_rate = 1.0 - p
    size = [input.shape[0]] + [1] * (input.ndim - 1) if mode == "row" else [1] * input.ndim
    noise = (generator().random(size) < survival_rate).astype(input.dtype)
    if survival_rate > 0.0:
        noise /= np.asarray(survival_rate, dtype=input.dtype)
    return input * noise


class StochasticDepth(Module):
    """``torchvision.ops.StochasticDepth``; see :func:`stochastic_depth`."""

    def __init__(self, p, mode):
        super().__init__()
        self.p = p
        self.mode = mode

    def forward(self, input):
        return stochastic_depth(input, self.p, self.mode, self.training)

    def __repr__(self):
        return f"{type(self).__name__}(p={self.p}, mode={self.mode})"


def _make_ntuple(x, n):
    if isinstance(x, Iterable):
        return tuple(x)
    return tuple(repeat(x, n))


class ConvNormActivation(Sequential):
    """torchvision's ConvNormActivation: conv (index 0), optional norm, optional activation, as a Sequential."""

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=None, groups=1,
                 norm_layer=BatchNorm2d, activation_layer=ReLU, dilation=1, inplace=True, bias=None,
                 conv_layer=Conv2d):
        if padding is None:
            if isinstance(kernel_size, int) and isinstance(dilation, int):
                padding = (kernel_size - 1) // 2 * dilation
            else:
                conv_dim = len(kernel_size) if isinstance(kernel_size, Iterable) else len(dilation)
                kernel_size = _make_ntuple(kernel_size, conv_dim)
                dilation = _make_ntuple(dilation, conv_dim)
                padding = tuple((kernel_size[i] - 1) // 2 * dilation[i] for i in range(conv_dim))
        if bias is None:
            bias = norm_layer is None
        layers = [conv_layer(in_channels, out_channels, kernel_size, stride, padding, dilation=dilation,
                             groups=groups, bias=bias)]
        if norm_layer is not None:
            layers.append(norm_layer(out_channels))
        if activation_layer is not None:
            params = {} if inplace is None else {"inplace": inplace}
            layers.append(activation_layer(**params))
        super().__init__(*layers)
        self.out_channels = out_channels

    def forward(self, input):
        layers = self._conv_norm_activation(input)
        if layers is None:
            return super().forward(input)
        conv, norm, activation = layers
        running_mean, running_var, weight, bias, training, momentum, eps = norm.batch_norm_arguments()
        return fn.ConvNormActivation.apply(input, conv.weight, conv.bias, running_mean, running_var, weight, bias,
                                           pair(conv.stride), pair(conv.padding), pair(conv.dilation), conv.groups,
                                           training, momentum, eps, activation)

    def _conv_norm_activation(self, input):
        """(conv, norm, activation name) when this block is its usual Conv2d -> BatchNorm2d -> activation
        (an `ActivationModule`, or none) and the input fits the convolution; then it runs as one fused
        op (`autograd.functions.ConvNormActivation`). Else None: the layers run one by one, as a
        Sequential — also when one has hooks, which must see its own input and output."""
        if _function.observer is not None and _function.observer.plain():
            return None  # a graph capture records the layers themselves
        layers = tuple(self._modules.values())
        if len(layers) not in (2, 3) or type(layers[0]) is not Conv2d or type(layers[1]) is not BatchNorm2d:
            return None
        conv, norm = layers[0], layers[1]
        record = module_record(layers[2]) if len(layers) == 3 else None
        if len(layers) == 3 and record is None:
            return None
        if any(m._forward_hooks or m._forward_pre_hooks for m in layers) or isinstance(conv.padding, str):
            return None
        if (not hasattr(input, "ndim") or input.ndim != 4 or input.shape[1] != conv.in_channels
                or input.dtype.kind != "f" or input.dtype != conv.weight.dtype):
            return None  # the plain path raises the layer's own error
        if norm.training and input.shape[0] * _output_pixels(conv, input) <= 1:
            return None  # batch norm's own error for one value per channel
        return conv, norm, None if record is None else record.name


def _output_pixels(conv, input):
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (pair(v) for v in (conv.kernel_size, conv.stride, conv.padding,
                                                                 conv.dilation))
    return output_size(input.shape[2], kh, sh, ph, dh) * output_size(input.shape[3], kw, sw, pw, dw)


class Conv2dNormActivation(ConvNormActivation):
    """``torchvision.ops.Conv2dNormActivation``: Conv2d → norm_layer → activation_layer, keys '0.*', '1.*'.

    ``padding=None`` gives ``(kernel_size - 1) // 2 * dilation``; ``bias=None`` means a conv bias only
    when there is no norm layer; ``norm_layer`` may be a partial such as
    ``functools.partial(BatchNorm2d, eps=1e-3, momentum=0.01)``.
    """

    def __init__(self, in_channels, out_channels, kernel_size=3, stride=1, padding=None, groups=1,
                 norm_layer=BatchNorm2d, activation_layer=ReLU, dilation=1, inplace=True, bias=None):
        super().__init__(in_channels, out_channels, kernel_size, stride, padding, groups, norm_layer,
                         activation_layer, dilation, inplace, bias, Conv2d)
