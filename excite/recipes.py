"""Models for the `excite` command: the small digits SE network plus every registered vision model, by name."""
import difflib
from functools import partial

from .errors import InvalidArgumentError

# One row per block, in the order of torchvision's InvertedResidualConfig: input_channels, kernel,
# expanded_channels, out_channels, use_se, activation, stride, dilation. A 32x32 input becomes 16x16
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

# image size each recipe is designed for; registered models default to 224
DEFAULT_IMAGE_SIZE = {"mobilenet_v3_digits": 32}


def mobilenet_v3_digits(*, num_classes=10, width_mult=1.0, dropout=0.2, **kwargs):
    """A MobileNetV3-Small-style SE network for 32x32 input (torchvision's MobileNetV3 class, smaller table).

    Its state_dict loads into ``torchvision.models.mobilenetv3.MobileNetV3`` built from the same rows
    of ``MOBILENET_V3_DIGITS_SETTING`` and ``MOBILENET_V3_DIGITS_LAST_CHANNEL``.
    """
    from .nn import BatchNorm2d
    from .vision.models.mobilenetv3 import InvertedResidualConfig, MobileNetV3

    setting = [InvertedResidualConfig(*row, width_mult=width_mult) for row in MOBILENET_V3_DIGITS_SETTING]
    last_channel = InvertedResidualConfig.adjust_channels(MOBILENET_V3_DIGITS_LAST_CHANNEL, width_mult)
    norm_layer = partial(BatchNorm2d, **MOBILENET_V3_DIGITS_BN)
    return MobileNetV3(setting, last_channel, num_classes=num_classes, norm_layer=norm_layer, dropout=dropout,
                       **kwargs)


RECIPES = {"mobilenet_v3_digits": mobilenet_v3_digits}


def list_models():
    """Every name `build_model` accepts: the recipes here, then the vision registry."""
    from .vision import models

    return sorted(RECIPES) + sorted(set(models.list_models()) - set(RECIPES))


def check_model_name(name):
    """Raise InvalidArgumentError naming close matches when ``name`` is not a known model."""
    names = list_models()
    if name in names:
        return
    close = difflib.get_close_matches(name, names, n=3, cutoff=0.5)
    hint = f"; did you mean {', '.join(close)}?" if close else f"; known models: {', '.join(names)}"
    raise InvalidArgumentError(f"unknown model {name!r}{hint}")


def build_model(name, num_classes=None, **kwargs):
    """Build model ``name`` with fresh weights (``num_classes`` None keeps the model's default)."""
    check_model_name(name)
    if num_classes is not None:
        kwargs["num_classes"] = int(num_classes)
    if name in RECIPES:
        return RECIPES[name](**kwargs)
    from .vision import models

    return models.get_model(name, **kwargs)


def default_image_size(name):
    return DEFAULT_IMAGE_SIZE.get(name, 224)
