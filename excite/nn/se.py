"""`SqueezeExcitation`: the channel-attention block, identical to torchvision.ops.SqueezeExcitation."""
from ..autograd import function as _function
from ..autograd import functions as fn
from ..errors import InvalidArgumentError, ShapeError, shape_str
from .activation import ReLU, Sigmoid, module_record
from .conv import Conv2d
from .module import Module
from .pooling import AdaptiveAvgPool2d


def _as_module(spec, role):
    """A Module instance is used as is; a class or factory (torchvision style) is called with no arguments."""
    if isinstance(spec, Module):
        return spec
    if callable(spec):
        module = spec()
        if isinstance(module, Module):
            return module
        raise InvalidArgumentError(
            f"SqueezeExcitation: {role} factory must return a Module, got {type(module).__name__}")
    raise InvalidArgumentError(
        f"SqueezeExcitation: {role} must be a Module, a Module class or a factory, got {type(spec).__name__}")


class SqueezeExcitation(Module):
    """Squeeze-and-Excitation (Hu et al., https://arxiv.org/abs/1709.01507), as torchvision.ops.SqueezeExcitation.

    Data flow, for ``x`` of shape ``[B, C, H, W]`` with ``C = input_channels``, ``S = squeeze_channels``::

        x ─┬─ avgpool ─ fc1 ─ activation ─ fc2 ─ scale_activation ─┐   (the gate, [B, C, 1, 1])
           │  [B,C,1,1] [B,S,1,1]  (δ)   [B,C,1,1]      (σ)        │
           └───────────────────────── × ───────────────────────────┘ → [B, C, H, W]

    ``avgpool`` is ``AdaptiveAvgPool2d(1)``; ``fc1`` / ``fc2`` are 1×1 ``Conv2d`` with bias;
    ``activation`` (δ, default ReLU) and ``scale_activation`` (σ, default Sigmoid) are eq. 3's
    delta and sigma. Children are registered in torchvision's order — avgpool, fc1, fc2,
    activation, scale_activation — so ``named_children()``, ``repr`` and the ``state_dict``
    keys (``fc1.weight, fc1.bias, fc2.weight, fc2.bias``) equal torchvision's and its
    checkpoints load unchanged. MobileNetV3 uses ReLU + Hardsigmoid, EfficientNet SiLU + Sigmoid.

    ``activation`` / ``scale_activation`` may be a Module class or factory (called with no
    arguments, as torchvision does) or a Module instance (used as is).

    The forward pass keeps no per-call state on the module, so one block can serve several
    threads at once (grad mode is per thread).
    """

    def __init__(self, input_channels, squeeze_channels, activation=ReLU, scale_activation=Sigmoid):
        super().__init__()
        for name, value in (("input_channels", input_channels), ("squeeze_channels", squeeze_channels)):
            if isinstance(value, bool) or not isinstance(value, int):
                raise InvalidArgumentError(
                    f"SqueezeExcitation: {name} must be an int, got {type(value).__name__} "
                    f"(input_channels={input_channels!r}, squeeze_channels={squeeze_channels!r})")
        if input_channels < 1 or squeeze_channels < 1:
            raise InvalidArgumentError(
                f"SqueezeExcitation needs input_channels >= 1 and squeeze_channels >= 1, got "
                f"input_channels={input_channels}, squeeze_channels={squeeze_channels}")
        self.avgpool = AdaptiveAvgPool2d(1)
        self.fc1 = Conv2d(input_channels, squeeze_channels, 1)
        self.fc2 = Conv2d(squeeze_channels, input_channels, 1)
        self.activation = _as_module(activation, "activation")
        self.scale_activation = _as_module(scale_activation, "scale_activation")

    def _check_input(self, input):
        channels = self.fc1.in_channels
        if input.ndim != 4 or input.shape[1] != channels:
            raise ShapeError(
                f"SqueezeExcitation expects input of shape [B, {channels}, H, W], got {shape_str(input.shape)}")

    def _scale(self, input):
        scale = self.avgpool(input)
        scale = self.fc1(scale)
        scale = self.activation(scale)
        scale = self.fc2(scale)
        return self.scale_activation(scale)

    def forward(self, input):
        self._check_input(input)
        names = self._activation_names(input)
        if names is None:
            return self._scale(input) * input
        # the whole block as one differentiable op: two passes over x instead of five or six
        return fn.SqueezeExcitation.apply(input, self.fc1.weight, self.fc1.bias, self.fc2.weight, self.fc2.bias,
                                          activation=names[0], scale_activation=names[1])

    def _activation_names(self, input):
        """The two activations' registry names when the block is its usual self (global average pool,
        plain 1x1 convolutions, registry activations, no hooks) and the input is floating point, else
        None: then the children run one by one."""
        if _function.observer is not None and _function.observer.plain():
            return None  # a graph capture records the layers themselves
        records = (module_record(self.activation), module_record(self.scale_activation))
        if None in records or any(m._forward_hooks or m._forward_pre_hooks for m in self._modules.values()):
            return None
        pool, fc1, fc2 = self.avgpool, self.fc1, self.fc2
        if type(pool) is not AdaptiveAvgPool2d or pool.output_size not in (1, (1, 1)):
            return None
        if not (_unit_conv(fc1) and _unit_conv(fc2)) or input.dtype.kind != "f" or fc1.weight.dtype != input.dtype:
            return None
        return records[0].name, records[1].name


def _unit_conv(fc):
    """A plain 1x1 Conv2d: stride 1, no padding or dilation, one group."""
    return (type(fc) is Conv2d and fc.kernel_size == (1, 1) and fc.groups == 1 and fc.stride in ((1, 1), 1)
            and fc.padding in ((0, 0), 0) and fc.dilation in ((1, 1), 1))
