"""MobileNetV3 (small, large) with torchvision's module names, BatchNorm settings and init."""
from collections.abc import Sequence
from functools import partial

from ... import nn
from ...errors import InvalidArgumentError
from ...nn import Conv2dNormActivation, SqueezeExcitation as SElayer
from ._utils import _NORM_LAYERS, _load_weights, _make_divisible, _resolve_weights

__all__ = ["MobileNetV3", "InvertedResidual", "InvertedResidualConfig", "mobilenet_v3_large", "mobilenet_v3_small",
           "mobilenet_v3_digits"]


class InvertedResidualConfig:
    # Stores information listed at Tables 1 and 2 of the MobileNetV3 paper
    def __init__(self, input_channels, kernel, expanded_channels, out_channels, use_se, activation, stride, dilation,
                 width_mult):
        self.input_channels = self.adjust_channels(input_channels, width_mult)
        self.kernel = kernel
        self.expanded_channels = self.adjust_channels(expanded_channels, width_mult)
        self.out_channels = self.adjust_channels(out_channels, width_mult)
        self.use_se = use_se
        self.use_hs = activation == "HS"
        self.stride = stride
        self.dilation = dilation

    @staticmethod
    def adjust_channels(channels, width_mult):
        return _make_divisible(channels * width_mult, 8)


class InvertedResidual(nn.Module):
    """Expand (1x1) -> depthwise (kxk) -> optional SE -> project (1x1), as in section 5 of the paper."""

    def __init__(self, cnf, norm_layer, se_layer=partial(SElayer, scale_activation=nn.Hardsigmoid)):
        super().__init__()
        if not (1 <= cnf.stride <= 2):
            raise InvalidArgumentError(f"InvertedResidual: stride must be 1 or 2, got {cnf.stride}")

        self.use_res_connect = cnf.stride == 1 and cnf.input_channels == cnf.out_channels

        layers = []
        activation_layer = nn.Hardswish if cnf.use_hs else nn.ReLU

        # expand
        if cnf.expanded_channels != cnf.input_channels:
            layers.append(Conv2dNormActivation(cnf.input_channels, cnf.expanded_channels, kernel_size=1,
                                               norm_layer=norm_layer, activation_layer=activation_layer))

        # depthwise; a dilated tail keeps its resolution, so dilation replaces the stride
        stride = 1 if cnf.dilation > 1 else cnf.stride
        layers.append(Conv2dNormActivation(cnf.expanded_channels, cnf.expanded_channels, kernel_size=cnf.kernel,
                                           stride=stride, dilation=cnf.dilation, groups=cnf.expanded_channels,
                                           norm_layer=norm_layer, activation_layer=activation_layer))
        if cnf.use_se:
            squeeze_channels = _make_divisible(cnf.expanded_channels // 4, 8)
            layers.append(se_layer(cnf.expanded_channels, squeeze_channels))

        # project (linear bottleneck: no activation)
        layers.append(Conv2dNormActivation(cnf.expanded_channels, cnf.out_channels, kernel_size=1,
                                           norm_layer=norm_layer, activation_layer=None))

        self.block = nn.Sequential(*layers)
        self.out_channels = cnf.out_channels
        self._is_cn = cnf.stride > 1

    def forward(self, input):
        result = self.block(input)
        if self.use_res_connect:
            result = result + input
        return result


class MobileNetV3(nn.Module):
    def __init__(self, inverted_residual_setting, last_channel, num_classes=1000, block=None, norm_layer=None,
                 dropout=0.2, **kwargs):
        """MobileNetV3 main class.

        Args:
            inverted_residual_setting (list[InvertedResidualConfig]): network structure
            last_channel (int): number of channels of the penultimate layer
            num_classes (int): number of classes
            block (callable, optional): the inverted residual block (default InvertedResidual)
            norm_layer (callable, optional): the normalization layer (default BatchNorm2d(eps=0.001, momentum=0.01))
            dropout (float): dropout probability before the last linear layer
        """
        super().__init__()

        if not inverted_residual_setting:
            raise InvalidArgumentError("The inverted_residual_setting should not be empty")
        elif not (isinstance(inverted_residual_setting, Sequence)
                  and all(isinstance(s, InvertedResidualConfig) for s in inverted_residual_setting)):
            raise TypeError("The inverted_residual_setting should be List[InvertedResidualConfig]")

        if block is None:
            block = InvertedResidual

        if norm_layer is None:
            norm_layer = partial(nn.BatchNorm2d, eps=0.001, momentum=0.01)

        layers = []

        # building first layer
        firstconv_output_channels = inverted_residual_setting[0].input_channels
        layers.append(Conv2dNormActivation(3, firstconv_output_channels, kernel_size=3, stride=2,
                                           norm_layer=norm_layer, activation_layer=nn.Hardswish))

        # building inverted residual blocks
        for cnf in inverted_residual_setting:
            layers.append(block(cnf, norm_layer))

        # building last several layers
        lastconv_input_channels = inverted_residual_setting[-1].out_channels
        lastconv_output_channels = 6 * lastconv_input_channels
        layers.append(Conv2dNormActivation(lastconv_input_channels, lastconv_output_channels, kernel_size=1,
                                           norm_layer=norm_layer, activation_layer=nn.Hardswish))

        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(
            nn.Linear(lastconv_output_channels, last_channel),
            nn.Hardswish(inplace=True),
            nn.Dropout(p=dropout, inplace=True),
            nn.Linear(last_channel, num_classes),
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
                nn.init.normal_(m.weight, 0, 0.01)
                nn.init.zeros_(m.bias)

    def _forward_impl(self, x):
        x = self.features(x)
        x = self.avgpool(x)
        x = x.flatten(1)
        x = self.classifier(x)
        return x

    def forward(self, x):
        return self._forward_impl(x)


def _mobilenet_v3_conf(arch, width_mult=1.0, reduced_tail=False, dilated=False, **kwargs):
    reduce_divider = 2 if reduced_tail else 1
    dilation = 2 if dilated else 1

    bneck_conf = partial(InvertedResidualConfig, width_mult=width_mult)
    adjust_channels = partial(InvertedResidualConfig.adjust_channels, width_mult=width_mult)

    if arch == "mobilenet_v3_large":
        # in, kernel, expanded, out, SE, activation, stride, dilation
        inverted_residual_setting = [
            bneck_conf(16, 3, 16, 16, False, "RE", 1, 1),
            bneck_conf(16, 3, 64, 24, False, "RE", 2, 1),  # C1
            bneck_conf(24, 3, 72, 24, False, "RE", 1, 1),
            bneck_conf(24, 5, 72, 40, True, "RE", 2, 1),  # C2
            bneck_conf(40, 5, 120, 40, True, "RE", 1, 1),
            bneck_conf(40, 5, 120, 40, True, "RE", 1, 1),
            bneck_conf(40, 3, 240, 80, False, "HS", 2, 1),  # C3
            bneck_conf(80, 3, 200, 80, False, "HS", 1, 1),
            bneck_conf(80, 3, 184, 80, False, "HS", 1, 1),
            bneck_conf(80, 3, 184, 80, False, "HS", 1, 1),
            bneck_conf(80, 3, 480, 112, True, "HS", 1, 1),
            bneck_conf(112, 3, 672, 112, True, "HS", 1, 1),
            bneck_conf(112, 5, 672, 160 // reduce_divider, True, "HS", 2, dilation),  # C4
            bneck_conf(160 // reduce_divider, 5, 960 // reduce_divider, 160 // reduce_divider, True, "HS", 1, dilation),
            bneck_conf(160 // reduce_divider, 5, 960 // reduce_divider, 160 // reduce_divider, True, "HS", 1, dilation),
        ]
        last_channel = adjust_channels(1280 // reduce_divider)  # C5
    elif arch == "mobilenet_v3_small":
        inverted_residual_setting = [
            bneck_conf(16, 3, 16, 16, True, "RE", 2, 1),  # C1
            bneck_conf(16, 3, 72, 24, False, "RE", 2, 1),  # C2
            bneck_conf(24, 3, 88, 24, False, "RE", 1, 1),
            bneck_conf(24, 5, 96, 40, True, "HS", 2, 1),  # C3
            bneck_conf(40, 5, 240, 40, True, "HS", 1, 1),
            bneck_conf(40, 5, 240, 40, True, "HS", 1, 1),
            bneck_conf(40, 5, 120, 48, True, "HS", 1, 1),
            bneck_conf(48, 5, 144, 48, True, "HS", 1, 1),
            bneck_conf(48, 5, 288, 96 // reduce_divider, True, "HS", 2, dilation),  # C4
            bneck_conf(96 // reduce_divider, 5, 576 // reduce_divider, 96 // reduce_divider, True, "HS", 1, dilation),
            bneck_conf(96 // reduce_divider, 5, 576 // reduce_divider, 96 // reduce_divider, True, "HS", 1, dilation),
        ]
        last_channel = adjust_channels(1024 // reduce_divider)  # C5
    else:
        raise InvalidArgumentError(f"Unsupported model type {arch}")

    return inverted_residual_setting, last_channel


def _mobilenet_v3(arch, inverted_residual_setting, last_channel, weights, progress, **kwargs):
    entry = _resolve_weights(arch, weights, kwargs)
    model = MobileNetV3(inverted_residual_setting, last_channel, **kwargs)
    return _load_weights(model, entry, progress)


def mobilenet_v3_large(*, weights=None, progress=True, **kwargs):
    """MobileNetV3-Large from `Searching for MobileNetV3 <https://arxiv.org/abs/1905.02244>`__.

    Args:
        weights: pretrained weights (a name or entry known to ``excite.vision.weights``), or None.
        progress (bool): show a progress bar while fetching weights.
        **kwargs: ``width_mult``, ``reduced_tail``, ``dilated`` and the arguments of :class:`MobileNetV3`
            (``num_classes``, ``norm_layer``, ``dropout``, ``block``).
    """
    inverted_residual_setting, last_channel = _mobilenet_v3_conf("mobilenet_v3_large", **kwargs)
    return _mobilenet_v3("mobilenet_v3_large", inverted_residual_setting, last_channel, weights, progress, **kwargs)


def mobilenet_v3_small(*, weights=None, progress=True, **kwargs):
    """MobileNetV3-Small from `Searching for MobileNetV3 <https://arxiv.org/abs/1905.02244>`__.

    Args: as :func:`mobilenet_v3_large`.
    """
    inverted_residual_setting, last_channel = _mobilenet_v3_conf("mobilenet_v3_small", **kwargs)
    return _mobilenet_v3("mobilenet_v3_small", inverted_residual_setting, last_channel, weights, progress, **kwargs)


# excite's own recipe (not torchvision's): one row per block, in InvertedResidualConfig's order (input_channels,
# kernel, expanded_channels, out_channels, use_se, activation, stride, dilation). A 32x32 input becomes 16x16
# after the stem, 8x8 after row 1 and 4x4 after row 4: the 8x8 digits carry no detail finer than that.
MOBILENET_V3_DIGITS_SETTING = (
    (16, 3, 16, 16, True, "RE", 2, 1),
    (16, 3, 64, 24, False, "RE", 1, 1),
    (24, 3, 72, 24, False, "RE", 1, 1),
    (24, 5, 96, 40, True, "HS", 2, 1),
    (40, 5, 120, 40, True, "HS", 1, 1),
    (40, 5, 144, 48, True, "HS", 1, 1),
)
MOBILENET_V3_DIGITS_LAST_CHANNEL = 256
# MobileNetV3's BatchNorm momentum of 0.01 suits 600 ImageNet epochs; a run of a few hundred steps
# needs running statistics that settle within it. eps stays torchvision's 1e-3 (it changes outputs).
MOBILENET_V3_DIGITS_BN = dict(eps=1e-3, momentum=0.1)
MOBILENET_V3_DIGITS_INPUT_SIZE = 32


def mobilenet_v3_digits(*, weights=None, progress=True, num_classes=10, width_mult=1.0, dropout=0.2, **kwargs):
    """A MobileNetV3-Small-style SE network for 32x32 input: torchvision's MobileNetV3 class with a smaller table.

    Its state_dict loads into ``torchvision.models.mobilenetv3.MobileNetV3`` built from the same rows of
    ``MOBILENET_V3_DIGITS_SETTING`` and ``MOBILENET_V3_DIGITS_LAST_CHANNEL``. No pretrained weights exist
    for it (``excite train`` trains it on the bundled digits in a few minutes).
    """
    setting = [InvertedResidualConfig(*row, width_mult=width_mult) for row in MOBILENET_V3_DIGITS_SETTING]
    last_channel = InvertedResidualConfig.adjust_channels(MOBILENET_V3_DIGITS_LAST_CHANNEL, width_mult)
    norm_layer = kwargs.pop("norm_layer", partial(nn.BatchNorm2d, **MOBILENET_V3_DIGITS_BN))
    entry = _resolve_weights("mobilenet_v3_digits", weights, kwargs)
    model = MobileNetV3(setting, last_channel, num_classes=kwargs.pop("num_classes", num_classes),
                        norm_layer=norm_layer, dropout=dropout, **kwargs)
    return _load_weights(model, entry, progress)
