"""RegNet-Y (400MF ... 128GF) with torchvision's module names, BatchNorm settings and init."""
import math
from collections import OrderedDict
from functools import partial

import numpy as np

from ... import nn
from ...errors import InvalidArgumentError
from ...nn import Conv2dNormActivation, SqueezeExcitation
from ._utils import _load_weights, _make_divisible, _resolve_weights

__all__ = [
    "RegNet", "SimpleStemIN", "BottleneckTransform", "ResBottleneckBlock", "AnyStage", "BlockParams",
    "regnet_y_400mf", "regnet_y_800mf", "regnet_y_1_6gf", "regnet_y_3_2gf", "regnet_y_8gf", "regnet_y_16gf",
    "regnet_y_32gf", "regnet_y_128gf",
]


class SimpleStemIN(Conv2dNormActivation):
    """Simple stem for ImageNet: 3x3, BN, ReLU."""

    def __init__(self, width_in, width_out, norm_layer, activation_layer):
        super().__init__(width_in, width_out, kernel_size=3, stride=2, norm_layer=norm_layer,
                         activation_layer=activation_layer)


class BottleneckTransform(nn.Sequential):
    """Bottleneck transformation: 1x1, grouped 3x3 [+SE], 1x1 (keys a, b, se, c)."""

    def __init__(self, width_in, width_out, stride, norm_layer, activation_layer, group_width,
                 bottleneck_multiplier, se_ratio):
        layers = OrderedDict()
        w_b = int(round(width_out * bottleneck_multiplier))
        g = w_b // group_width

        layers["a"] = Conv2dNormActivation(width_in, w_b, kernel_size=1, stride=1, norm_layer=norm_layer,
                                           activation_layer=activation_layer)
        layers["b"] = Conv2dNormActivation(w_b, w_b, kernel_size=3, stride=stride, groups=g, norm_layer=norm_layer,
                                           activation_layer=activation_layer)
        if se_ratio:
            # the SE width follows the block's input, not the bottleneck width
            width_se_out = int(round(se_ratio * width_in))
            layers["se"] = SqueezeExcitation(input_channels=w_b, squeeze_channels=width_se_out,
                                             activation=activation_layer)
        layers["c"] = Conv2dNormActivation(w_b, width_out, kernel_size=1, stride=1, norm_layer=norm_layer,
                                           activation_layer=None)
        super().__init__(layers)


class ResBottleneckBlock(nn.Module):
    """Residual bottleneck block: activation(proj(x) + f(x)), proj a strided 1x1 conv + BN when the shape changes."""

    def __init__(self, width_in, width_out, stride, norm_layer, activation_layer, group_width=1,
                 bottleneck_multiplier=1.0, se_ratio=None):
        super().__init__()
        self.proj = None
        if width_in != width_out or stride != 1:
            self.proj = Conv2dNormActivation(width_in, width_out, kernel_size=1, stride=stride,
                                             norm_layer=norm_layer, activation_layer=None)
        self.f = BottleneckTransform(width_in, width_out, stride, norm_layer, activation_layer, group_width,
                                     bottleneck_multiplier, se_ratio)
        self.activation = activation_layer(inplace=True)

    def forward(self, x):
        if self.proj is not None:
            x = self.proj(x) + self.f(x)
        else:
            x = x + self.f(x)
        return self.activation(x)


class AnyStage(nn.Sequential):
    """AnyNet stage: ``depth`` blocks of one output width, the first one strided (keys ``block<stage>-<i>``)."""

    def __init__(self, width_in, width_out, stride, depth, block_constructor, norm_layer, activation_layer,
                 group_width, bottleneck_multiplier, se_ratio=None, stage_index=0):
        super().__init__()
        for i in range(depth):
            block = block_constructor(width_in if i == 0 else width_out, width_out, stride if i == 0 else 1,
                                      norm_layer, activation_layer, group_width, bottleneck_multiplier, se_ratio)
            self.add_module(f"block{stage_index}-{i}", block)


class BlockParams:
    """Per-stage depths, widths, group widths, bottleneck multipliers and strides of a RegNet."""

    def __init__(self, depths, widths, group_widths, bottleneck_multipliers, strides, se_ratio=None):
        self.depths = depths
        self.widths = widths
        self.group_widths = group_widths
        self.bottleneck_multipliers = bottleneck_multipliers
        self.strides = strides
        self.se_ratio = se_ratio

    @classmethod
    def from_init_params(cls, depth, w_0, w_a, w_m, group_width, bottleneck_multiplier=1.0, se_ratio=None,
                         **kwargs):
        """The stages of the paper's quantised linear parameterisation (section 3.3 of Designing Network Design
        Spaces): block j has width ``w_0 + w_a * j``, snapped in log space to ``w_0 * w_m ** k`` and rounded to
        a multiple of 8; consecutive blocks of one width form a stage, each stage halves the resolution.
        """
        QUANT = 8
        STRIDE = 2

        if w_a < 0 or w_0 <= 0 or w_m <= 1 or w_0 % 8 != 0:
            raise InvalidArgumentError(f"Invalid RegNet settings: need w_a >= 0, w_0 > 0 and a multiple of 8, "
                                       f"w_m > 1; got w_0={w_0}, w_a={w_a}, w_m={w_m}")
        # torchvision computes this in float32 (torch's default dtype); the widths depend on each rounding
        f32 = np.float32
        widths_cont = np.arange(depth).astype(f32) * f32(w_a) + f32(w_0)
        block_capacity = np.round(np.log(widths_cont / f32(w_0)) / f32(math.log(w_m)))
        block_widths = (np.round((f32(w_0) * np.power(f32(w_m), block_capacity)) / f32(QUANT)) * QUANT)
        block_widths = block_widths.astype(np.int32).tolist()
        num_stages = len(set(block_widths))

        # a stage starts wherever the width changes
        splits = [w != wp for w, wp in zip(block_widths + [0], [0] + block_widths)]
        stage_widths = [w for w, t in zip(block_widths, splits[:-1]) if t]
        stage_depths = np.diff([d for d, t in enumerate(splits) if t]).astype(int).tolist()

        strides = [STRIDE] * num_stages
        bottleneck_multipliers = [bottleneck_multiplier] * num_stages
        group_widths = [group_width] * num_stages

        stage_widths, group_widths = cls._adjust_widths_groups_compatibilty(
            stage_widths, bottleneck_multipliers, group_widths)

        return cls(depths=stage_depths, widths=stage_widths, group_widths=group_widths,
                   bottleneck_multipliers=bottleneck_multipliers, strides=strides, se_ratio=se_ratio)

    def _get_expanded_params(self):
        return zip(self.widths, self.strides, self.depths, self.group_widths, self.bottleneck_multipliers)

    @staticmethod
    def _adjust_widths_groups_compatibilty(stage_widths, bottleneck_ratios, group_widths):
        """Widths that the group width divides (after the bottleneck ratio); torchvision's spelling."""
        widths = [int(w * b) for w, b in zip(stage_widths, bottleneck_ratios)]
        group_widths_min = [min(g, w_bot) for g, w_bot in zip(group_widths, widths)]
        ws_bot = [_make_divisible(w_bot, g) for w_bot, g in zip(widths, group_widths_min)]
        stage_widths = [int(w_bot / b) for w_bot, b in zip(ws_bot, bottleneck_ratios)]
        return stage_widths, group_widths_min


class RegNet(nn.Module):
    def __init__(self, block_params, num_classes=1000, stem_width=32, stem_type=None, block_type=None,
                 norm_layer=None, activation=None):
        """RegNet main class.

        Args:
            block_params (BlockParams): the stages
            num_classes (int): number of classes
            stem_width (int): output channels of the stem
            stem_type, block_type (callable, optional): default SimpleStemIN, ResBottleneckBlock
            norm_layer (callable, optional): default BatchNorm2d
            activation (callable, optional): default ReLU
        """
        super().__init__()
        if stem_type is None:
            stem_type = SimpleStemIN
        if norm_layer is None:
            norm_layer = nn.BatchNorm2d
        if block_type is None:
            block_type = ResBottleneckBlock
        if activation is None:
            activation = nn.ReLU

        self.stem = stem_type(3, stem_width, norm_layer, activation)

        current_width = stem_width
        blocks = []
        for i, (width_out, stride, depth, group_width, bottleneck_multiplier) in enumerate(
                block_params._get_expanded_params()):
            blocks.append((f"block{i + 1}", AnyStage(
                current_width, width_out, stride, depth, block_type, norm_layer, activation, group_width,
                bottleneck_multiplier, block_params.se_ratio, stage_index=i + 1)))
            current_width = width_out

        self.trunk_output = nn.Sequential(OrderedDict(blocks))

        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        self.fc = nn.Linear(in_features=current_width, out_features=num_classes)

        # ResNet-style initialisation
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                # no bias: BatchNorm follows every convolution
                fan_out = m.kernel_size[0] * m.kernel_size[1] * m.out_channels
                nn.init.normal_(m.weight, mean=0.0, std=math.sqrt(2.0 / fan_out))
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, mean=0.0, std=0.01)
                nn.init.zeros_(m.bias)

    def forward(self, x):
        x = self.stem(x)
        x = self.trunk_output(x)
        x = self.avgpool(x)
        x = x.flatten(start_dim=1)
        x = self.fc(x)
        return x


def _regnet(arch, block_params, weights, progress, **kwargs):
    entry = _resolve_weights(arch, weights, kwargs)
    norm_layer = kwargs.pop("norm_layer", partial(nn.BatchNorm2d, eps=1e-05, momentum=0.1))
    model = RegNet(block_params, norm_layer=norm_layer, **kwargs)
    return _load_weights(model, entry, progress)


# the paper's parameters of each RegNetY: depth, w_0, w_a, w_m, group width (Designing Network Design Spaces,
# Appendix C); every Y model adds SE with ratio 0.25 of the block's input width
_REGNET_Y = {
    "regnet_y_400mf": dict(depth=16, w_0=48, w_a=27.89, w_m=2.09, group_width=8),
    "regnet_y_800mf": dict(depth=14, w_0=56, w_a=38.84, w_m=2.4, group_width=16),
    "regnet_y_1_6gf": dict(depth=27, w_0=48, w_a=20.71, w_m=2.65, group_width=24),
    "regnet_y_3_2gf": dict(depth=21, w_0=80, w_a=42.63, w_m=2.66, group_width=24),
    "regnet_y_8gf": dict(depth=17, w_0=192, w_a=76.82, w_m=2.19, group_width=56),
    "regnet_y_16gf": dict(depth=18, w_0=200, w_a=106.23, w_m=2.48, group_width=112),
    "regnet_y_32gf": dict(depth=20, w_0=232, w_a=115.89, w_m=2.53, group_width=232),
    "regnet_y_128gf": dict(depth=27, w_0=456, w_a=160.83, w_m=2.52, group_width=264),
}


def _regnet_y(arch, weights, progress, kwargs):
    # as torchvision, the keyword arguments go to both BlockParams.from_init_params and RegNet
    params = BlockParams.from_init_params(**_REGNET_Y[arch], se_ratio=0.25, **kwargs)
    return _regnet(arch, params, weights, progress, **kwargs)


_DOC = """{title} from `Designing Network Design Spaces <https://arxiv.org/abs/2003.13678>`_.

    Args:
        weights: pretrained weights (a name or entry known to ``excite.vision.weights``), or None.
        progress (bool): show a progress bar while fetching weights.
        **kwargs: the arguments of :class:`RegNet` (``num_classes``, ``stem_width``, ``norm_layer``, ...)
            (as in torchvision they also reach :meth:`BlockParams.from_init_params`).
    """


def regnet_y_400mf(*, weights=None, progress=True, **kwargs):
    return _regnet_y("regnet_y_400mf", weights, progress, kwargs)


def regnet_y_800mf(*, weights=None, progress=True, **kwargs):
    return _regnet_y("regnet_y_800mf", weights, progress, kwargs)


def regnet_y_1_6gf(*, weights=None, progress=True, **kwargs):
    return _regnet_y("regnet_y_1_6gf", weights, progress, kwargs)


def regnet_y_3_2gf(*, weights=None, progress=True, **kwargs):
    return _regnet_y("regnet_y_3_2gf", weights, progress, kwargs)


def regnet_y_8gf(*, weights=None, progress=True, **kwargs):
    return _regnet_y("regnet_y_8gf", weights, progress, kwargs)


def regnet_y_16gf(*, weights=None, progress=True, **kwargs):
    return _regnet_y("regnet_y_16gf", weights, progress, kwargs)


def regnet_y_32gf(*, weights=None, progress=True, **kwargs):
    return _regnet_y("regnet_y_32gf", weights, progress, kwargs)


def regnet_y_128gf(*, weights=None, progress=True, **kwargs):
    return _regnet_y("regnet_y_128gf", weights, progress, kwargs)


for _builder, _title in [(regnet_y_400mf, "RegNetY_400MF"), (regnet_y_800mf, "RegNetY_800MF"),
                         (regnet_y_1_6gf, "RegNetY_1.6GF"), (regnet_y_3_2gf, "RegNetY_3.2GF"),
                         (regnet_y_8gf, "RegNetY_8GF"), (regnet_y_16gf, "RegNetY_16GF"),
                         (regnet_y_32gf, "RegNetY_32GF"), (regnet_y_128gf, "RegNetY_128GF")]:
    _builder.__doc__ = _DOC.format(title=_title)
del _builder, _title
