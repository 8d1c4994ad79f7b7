"""EfficientNet B0-B7 and EfficientNetV2 S/M/L with torchvision's module names, BatchNorm settings and init."""
import copy
import math
from collections.abc import Sequence
from dataclasses import dataclass
from functools import partial
from typing import Callable

from ... import nn
from ...errors import InvalidArgumentError
from ...nn import Conv2dNormActivation, SqueezeExcitation, StochasticDepth
from ._utils import _NORM_LAYERS, _load_weights, _make_divisible, _resolve_weights

__all__ = [
    "EfficientNet", "MBConv", "FusedMBConv", "MBConvConfig", "FusedMBConvConfig",
    "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "efficientnet_b4",
    "efficientnet_b5", "efficientnet_b6", "efficientnet_b7",
    "efficientnet_v2_s", "efficientnet_v2_m", "efficientnet_v2_l",
]


@dataclass
class _MBConvConfig:
    expand_ratio: float
    kernel: int
    stride: int
    input_channels: int
    out_channels: int
    num_layers: int
    block: Callable[..., nn.Module]

    @staticmethod
    def adjust_channels(channels, width_mult, min_value=None):
        return _make_divisible(channels * width_mult, 8, min_value)


class MBConvConfig(_MBConvConfig):
    # Stores information listed at Table 1 of the EfficientNet paper & Table 4 of the EfficientNetV2 paper
    def __init__(self, expand_ratio, kernel, stride, input_channels, out_channels, num_layers, width_mult=1.0,
                 depth_mult=1.0, block=None):
        input_channels = self.adjust_channels(input_channels, width_mult)
        out_channels = self.adjust_channels(out_channels, width_mult)
        num_layers = self.adjust_depth(num_layers, depth_mult)
        if block is None:
            block = MBConv
        super().__init__(expand_ratio, kernel, stride, input_channels, out_channels, num_layers, block)

    @staticmethod
    def adjust_depth(num_layers, depth_mult):
        return int(math.ceil(num_layers * depth_mult))


class FusedMBConvConfig(_MBConvConfig):
    # Stores information listed at Table 4 of the EfficientNetV2 paper
    def __init__(self, expand_ratio, kernel, stride, input_channels, out_channels, num_layers, block=None):
        if block is None:
            block = FusedMBConv
        super().__init__(expand_ratio, kernel, stride, input_channels, out_channels, num_layers, block)


def _check_stride(block_name, stride):
    if not (1 <= stride <= 2):
        raise InvalidArgumentError(f"{block_name}: stride must be 1 or 2, got {stride}")


class MBConv(nn.Module):
    """Expand (1x1) -> depthwise (kxk) -> SE -> project (1x1), with stochastic depth on the residual branch."""

    def __init__(self, cnf, stochastic_depth_prob, norm_layer, se_layer=SqueezeExcitation):
        super().__init__()
        _check_stride("MBConv", cnf.stride)

        self.use_res_connect = cnf.stride == 1 and cnf.input_channels == cnf.out_channels

        layers = []
        activation_layer = nn.SiLU

        # expand
        expanded_channels = cnf.adjust_channels(cnf.input_channels, cnf.expand_ratio)
        if expanded_channels != cnf.input_channels:
            layers.append(Conv2dNormActivation(cnf.input_channels, expanded_channels, kernel_size=1,
                                               norm_layer=norm_layer, activation_layer=activation_layer))

        # depthwise
        layers.append(Conv2dNormActivation(expanded_channels, expanded_channels, kernel_size=cnf.kernel,
                                           stride=cnf.stride, groups=expanded_channels, norm_layer=norm_layer,
                                           activation_layer=activation_layer))

        # squeeze and excitation; its width follows the block's input, not the expanded channels
        squeeze_channels = max(1, cnf.input_channels // 4)
        layers.append(se_layer(expanded_channels, squeeze_channels, activation=partial(nn.SiLU, inplace=True)))

        # project
        layers.append(Conv2dNormActivation(expanded_channels, cnf.out_channels, kernel_size=1,
                                           norm_layer=norm_layer, activation_layer=None))

        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(stochastic_depth_prob, "row")
        self.out_channels = cnf.out_channels

    def forward(self, input):
        result = self.block(input)
        if self.use_res_connect:
            result = self.stochastic_depth(result)
            result = result + input
        return result


class FusedMBConv(nn.Module):
    """A full kxk convolution in place of expand + depthwise (EfficientNetV2's early stages), no SE."""

    def __init__(self, cnf, stochastic_depth_prob, norm_layer):
        super().__init__()
        _check_stride("FusedMBConv", cnf.stride)

        self.use_res_connect = cnf.stride == 1 and cnf.input_channels == cnf.out_channels

        layers = []
        activation_layer = nn.SiLU

        expanded_channels = cnf.adjust_channels(cnf.input_channels, cnf.expand_ratio)
        if expanded_channels != cnf.input_channels:
            # fused expand
            layers.append(Conv2dNormActivation(cnf.input_channels, expanded_channels, kernel_size=cnf.kernel,
                                               stride=cnf.stride, norm_layer=norm_layer,
                                               activation_layer=activation_layer))
            # project
            layers.append(Conv2dNormActivation(expanded_channels, cnf.out_channels, kernel_size=1,
                                               norm_layer=norm_layer, activation_layer=None))
        else:
            layers.append(Conv2dNormActivation(cnf.input_channels, cnf.out_channels, kernel_size=cnf.kernel,
                                               stride=cnf.stride, norm_layer=norm_layer,
                                               activation_layer=activation_layer))

        self.block = nn.Sequential(*layers)
        self.stochastic_depth = StochasticDepth(stochastic_depth_prob, "row")
        self.out_channels = cnf.out_channels

    def forward(self, input):
        result = self.block(input)
        if self.use_res_connect:
            result = self.stochastic_depth(result)
            result = result + input
        return result


class EfficientNet(nn.Module):
    def __init__(self, inverted_residual_setting, dropout, stochastic_depth_prob=0.2, num_classes=1000,
                 norm_layer=None, last_channel=None):
        """EfficientNet V1 and V2 main class.

        Args:
            inverted_residual_setting (Sequence[MBConvConfig | FusedMBConvConfig]): network structure
            dropout (float): dropout probability before the classifier
            stochastic_depth_prob (float): stochastic depth probability of the last block (earlier blocks get less)
            num_classes (int): number of classes
            norm_layer (callable, optional): the normalization layer (default BatchNorm2d)
            last_channel (int, optional): channels of the penultimate layer (default 4x the last block's)
        """
        super().__init__()

        if not inverted_residual_setting:
            raise InvalidArgumentError("The inverted_residual_setting should not be empty")
        elif not (isinstance(inverted_residual_setting, Sequence)
                  and all(isinstance(s, _MBConvConfig) for s in inverted_residual_setting)):
            raise TypeError("The inverted_residual_setting should be List[MBConvConfig]")

        if norm_layer is None:
            norm_layer = nn.BatchNorm2d

        layers = []

        # building first layer
        firstconv_output_channels = inverted_residual_setting[0].input_channels
        layers.append(Conv2dNormActivation(3, firstconv_output_channels, kernel_size=3, stride=2,
                                           norm_layer=norm_layer, activation_layer=nn.SiLU))

        # building inverted residual blocks
        total_stage_blocks = sum(cnf.num_layers for cnf in inverted_residual_setting)
        stage_block_id = 0
        for cnf in inverted_residual_setting:
            stage = []
            for _ in range(cnf.num_layers):
                # a shallow copy, so that the stage's later blocks can change it without touching the config row
                block_cnf = copy.copy(cnf)

                # only the first block of a stage changes channels and resolution
                if stage:
                    block_cnf.input_channels = block_cnf.out_channels
                    block_cnf.stride = 1

                # deeper blocks are dropped more often (linear decay rule of the stochastic depth paper)
                sd_prob = stochastic_depth_prob * float(stage_block_id) / total_stage_blocks

                stage.append(block_cnf.block(block_cnf, sd_prob, norm_layer))
                stage_block_id += 1

            layers.append(nn.Sequential(*stage))

        # building last several layers
        lastconv_input_channels = inverted_residual_setting[-1].out_channels
        lastconv_output_channels = last_channel if last_channel is not None else 4 * lastconv_input_channels
        layers.append(Conv2dNormActivation(lastconv_input_channels, lastconv_output_channels, kernel_size=1,
                                           norm_layer=norm_layer, activation_layer=nn.SiLU))

        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Dropout(p=dropout, inplace=True),
            nn.Linear(lastconv_output_channels, num_classes),
        )

        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out")
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, _NORM_LAYERS):
                nn.init.ones_(m.weight)
                nn.init.zeros_(m.bias)
            elif isinstance(m, nn.Linear):
                init_range = 1.0 / math.sqrt(m.out_features)
                nn.init.uniform_(m.weight, -init_range, init_range)
                nn.init.zeros_(m.bias)

    def _forward_impl(self, x):
        x = self.features(x)
        x = self.avgpool(x)
        x = x.flatten(1)
        x = self.classifier(x)
        return x

    def forward(self, x):
        return self._forward_impl(x)


def _efficientnet(arch, inverted_residual_setting, dropout, last_channel, weights, progress, **kwargs):
    entry = _resolve_weights(arch, weights, kwargs)
    model = EfficientNet(inverted_residual_setting, dropout, last_channel=last_channel, **kwargs)
    return _load_weights(model, entry, progress)


def _efficientnet_conf(arch, **kwargs):
    if arch.startswith("efficientnet_b"):
        bneck_conf = partial(MBConvConfig, width_mult=kwargs.pop("width_mult"), depth_mult=kwargs.pop("depth_mult"))
        # expand_ratio, kernel, stride, in, out, layers (before width/depth scaling)
        inverted_residual_setting = [
            bneck_conf(1, 3, 1, 32, 16, 1),
            bneck_conf(6, 3, 2, 16, 24, 2),
            bneck_conf(6, 5, 2, 24, 40, 2),
            bneck_conf(6, 3, 2, 40, 80, 3),
            bneck_conf(6, 5, 1, 80, 112, 3),
            bneck_conf(6, 5, 2, 112, 192, 4),
            bneck_conf(6, 3, 1, 192, 320, 1),
        ]
        last_channel = None
    elif arch.startswith("efficientnet_v2_s"):
        inverted_residual_setting = [
            FusedMBConvConfig(1, 3, 1, 24, 24, 2),
            FusedMBConvConfig(4, 3, 2, 24, 48, 4),
            FusedMBConvConfig(4, 3, 2, 48, 64, 4),
            MBConvConfig(4, 3, 2, 64, 128, 6),
            MBConvConfig(6, 3, 1, 128, 160, 9),
            MBConvConfig(6, 3, 2, 160, 256, 15),
        ]
        last_channel = 1280
    elif arch.startswith("efficientnet_v2_m"):
        inverted_residual_setting = [
            FusedMBConvConfig(1, 3, 1, 24, 24, 3),
            FusedMBConvConfig(4, 3, 2, 24, 48, 5),
            FusedMBConvConfig(4, 3, 2, 48, 80, 5),
            MBConvConfig(4, 3, 2, 80, 160, 7),
            MBConvConfig(6, 3, 1, 160, 176, 14),
            MBConvConfig(6, 3, 2, 176, 304, 18),
            MBConvConfig(6, 3, 1, 304, 512, 5),
        ]
        last_channel = 1280
    elif arch.startswith("efficientnet_v2_l"):
        inverted_residual_setting = [
            FusedMBConvConfig(1, 3, 1, 32, 32, 4),
            FusedMBConvConfig(4, 3, 2, 32, 64, 7),
            FusedMBConvConfig(4, 3, 2, 64, 96, 7),
            MBConvConfig(4, 3, 2, 96, 192, 10),
            MBConvConfig(6, 3, 1, 192, 224, 19),
            MBConvConfig(6, 3, 2, 224, 384, 25),
            MBConvConfig(6, 3, 1, 384, 640, 7),
        ]
        last_channel = 1280
    else:
        raise InvalidArgumentError(f"Unsupported model type {arch}")

    return inverted_residual_setting, last_channel


# B5-B7 were trained (in TensorFlow) with these BatchNorm settings; the checkpoints only work with them
_BN_TF_B5_B7 = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)
_BN_V2 = partial(nn.BatchNorm2d, eps=1e-03)


def efficientnet_b0(*, weights=None, progress=True, **kwargs):
    """EfficientNet-B0 from `EfficientNet: Rethinking Model Scaling for Convolutional Neural Networks
    <https://arxiv.org/abs/1905.11946>`_.

    Args:
        weights: pretrained weights (a name or entry known to ``excite.vision.weights``), or None.
        progress (bool): show a progress bar while fetching weights.
        **kwargs: ``dropout`` and the arguments of :class:`EfficientNet` (``num_classes``,
            ``stochastic_depth_prob``, ``norm_layer``).
    """
    inverted_residual_setting, last_channel = _efficientnet_conf("efficientnet_b0", width_mult=1.0, depth_mult=1.0)
    return _efficientnet("efficientnet_b0", inverted_residual_setting, kwargs.pop("dropout", 0.2), last_channel,
                         weights, progress, **kwargs)


def efficientnet_b1(*, weights=None, progress=True, **kwargs):
    """EfficientNet-B1 (width x1.0, depth x1.1, dropout 0.2) from `EfficientNet: Rethinking Model
    Scaling for Convolutional Neural Networks <https://arxiv.org/abs/1905.11946>`_.

    Args: as :func:`efficientnet_b0`.
    """
    inverted_residual_setting, last_channel = _efficientnet_conf("efficientnet_b1", width_mult=1.0, depth_mult=1.1)
    return _efficientnet("efficientnet_b1", inverted_residual_setting, kwargs.pop("dropout", 0.2), last_channel,
                         weights, progress, **kwargs)


def efficientnet_b2(*, weights=None, progress=True, **kwargs):
    """EfficientNet-B2 (width x1.1, depth x1.2, dropout 0.3) from `EfficientNet: Rethinking Model
    Scaling for Convolutional Neural Networks <https://arxiv.org/abs/1905.11946>`_.

    Args: as :func:`efficientnet_b0`.
    """
    inverted_residual_setting, last_channel = _efficientnet_conf("efficientnet_b2", width_mult=1.1, depth_mult=1.2)
    return _efficientnet("efficientnet_b2", inverted_residual_setting, kwargs.pop("dropout", 0.3), last_channel,
                         weights, progress, **kwargs)


def efficientnet_b3(*, weights=None, progress=True, **kwargs):
    """EfficientNet-B3 (width x1.2, depth x1.4, dropout 0.3) from `EfficientNet: Rethinking Model
    Scaling for Convolutional Neural Networks <https://arxiv.org/abs/1905.11946>`_.

    Args: as :func:`efficientnet_b0`.
    """
    inverted_residual_setting, last_channel = _efficientnet_conf("efficientnet_b3", width_mult=1.2, depth_mult=1.4)
    return _efficientnet("efficientnet_b3", inverted_residual_setting, kwargs.pop("dropout", 0.3), last_channel,
                         weights, progress, **kwargs)


def efficientnet_b4(*, weights=None, progress=True, **kwargs):
    """EfficientNet-B4 (width x1.4, depth x1.8, dropout 0.4) from `EfficientNet: Rethinking Model
    Scaling for Convolutional Neural Networks <https://arxiv.org/abs/1905.11946>`_.

    Args: as :func:`efficientnet_b0`.
    """
    inverted_residual_setting, last_channel = _efficientnet_conf("efficientnet_b4", width_mult=1.4, depth_mult=1.8)
    return _efficientnet("efficientnet_b4", inverted_residual_setting, kwargs.pop("dropout", 0.4), last_channel,
                         weights, progress, **kwargs)


def efficientnet_b5(*, weights=None, progress=True, **kwargs):
    """EfficientNet-B5 (width x1.6, depth x2.2, dropout 0.4) from `EfficientNet: Rethinking Model
    Scaling for Convolutional Neural Networks <https://arxiv.org/abs/1905.11946>`_.

    Args: as :func:`efficientnet_b0` (``norm_layer`` is fixed to BatchNorm2d(eps=0.001, momentum=0.01)).
    """
    inverted_residual_setting, last_channel = _efficientnet_conf("efficientnet_b5", width_mult=1.6, depth_mult=2.2)
    return _efficientnet("efficientnet_b5", inverted_residual_setting, kwargs.pop("dropout", 0.4), last_channel,
                         weights, progress, norm_layer=_BN_TF_B5_B7, **kwargs)


def efficientnet_b6(*, weights=None, progress=True, **kwargs):
    """EfficientNet-B6 (width x1.8, depth x2.6, dropout 0.5) from `EfficientNet: Rethinking Model
    Scaling for Convolutional Neural Networks <https://arxiv.org/abs/1905.11946>`_.

    Args: as :func:`efficientnet_b0` (``norm_layer`` is fixed to BatchNorm2d(eps=0.001, momentum=0.01)).
    """
    inverted_residual_setting, last_channel = _efficientnet_conf("efficientnet_b6", width_mult=1.8, depth_mult=2.6)
    return _efficientnet("efficientnet_b6", inverted_residual_setting, kwargs.pop("dropout", 0.5), last_channel,
                         weights, progress, norm_layer=_BN_TF_B5_B7, **kwargs)


def efficientnet_b7(*, weights=None, progress=True, **kwargs):
    """EfficientNet-B7 (width x2.0, depth x3.1, dropout 0.5) from `EfficientNet: Rethinking Model
    Scaling for Convolutional Neural Networks <https://arxiv.org/abs/1905.11946>`_.

    Args: as :func:`efficientnet_b0` (``norm_layer`` is fixed to BatchNorm2d(eps=0.001, momentum=0.01)).
    """
    inverted_residual_setting, last_channel = _efficientnet_conf("efficientnet_b7", width_mult=2.0, depth_mult=3.1)
    return _efficientnet("efficientnet_b7", inverted_residual_setting, kwargs.pop("dropout", 0.5), last_channel,
                         weights, progress, norm_layer=_BN_TF_B5_B7, **kwargs)


def efficientnet_v2_s(*, weights=None, progress=True, **kwargs):
    """EfficientNetV2-S from `EfficientNetV2: Smaller Models and Faster Training <https://arxiv.org/abs/2104.00298>`_.

    Args: as :func:`efficientnet_b0` (``norm_layer`` is fixed to BatchNorm2d(eps=1e-3)).
    """
    inverted_residual_setting, last_channel = _efficientnet_conf("efficientnet_v2_s")
    return _efficientnet("efficientnet_v2_s", inverted_residual_setting, kwargs.pop("dropout", 0.2), last_channel,
                         weights, progress, norm_layer=_BN_V2, **kwargs)


def efficientnet_v2_m(*, weights=None, progress=True, **kwargs):
    """EfficientNetV2-M from `EfficientNetV2: Smaller Models and Faster Training <https://arxiv.org/abs/2104.00298>`_.

    Args: as :func:`efficientnet_b0` (``norm_layer`` is fixed to BatchNorm2d(eps=1e-3)).
    """
    inverted_residual_setting, last_channel = _efficientnet_conf("efficientnet_v2_m")
    return _efficientnet("efficientnet_v2_m", inverted_residual_setting, kwargs.pop("dropout", 0.3), last_channel,
                         weights, progress, norm_layer=_BN_V2, **kwargs)


def efficientnet_v2_l(*, weights=None, progress=True, **kwargs):
    """EfficientNetV2-L from `EfficientNetV2: Smaller Models and Faster Training <https://arxiv.org/abs/2104.00298>`_.

    Args: as :func:`efficientnet_b0` (``norm_layer`` is fixed to BatchNorm2d(eps=1e-3)).
    """
    inverted_residual_setting, last_channel = _efficientnet_conf("efficientnet_v2_l")
    return _efficientnet("efficientnet_v2_l", inverted_residual_setting, kwargs.pop("dropout", 0.4), last_channel,
                         weights, progress, norm_layer=_BN_V2, **kwargs)
