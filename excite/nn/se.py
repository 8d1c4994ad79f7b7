"""`SqueezeExcitation`: the channel-attention block, identical to torchvision.ops.SqueezeExcitation."""
from ..errors import InvalidArgumentError, ShapeError, shape_str
from .activation import ReLU, Sigmoid
from .conv import Conv2d
from .fused import squeeze_excitation
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
        out = squeeze_excitation(self, input)  # the whole block as one fused, differentiable op
        if out is not None:
            return out
        scale = self._scale(input)
        return scale * input
