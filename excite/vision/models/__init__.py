"""torchvision-compatible SE networks: MobileNetV3, EfficientNet (V1, V2), RegNet-Y, MaxViT; the registry, weights."""
from .. import weights as _weights
from ._registry import default_input_size, get_model, get_model_builder, list_models
from .efficientnet import (EfficientNet, FusedMBConv, FusedMBConvConfig, MBConv, MBConvConfig, efficientnet_b0,
                           efficientnet_b1, efficientnet_b2, efficientnet_b3, efficientnet_b4, efficientnet_b5,
                           efficientnet_b6, efficientnet_b7, efficientnet_v2_l, efficientnet_v2_m, efficientnet_v2_s)
from .maxvit import MaxVit, maxvit_t
from .mobilenetv3 import (InvertedResidual, InvertedResidualConfig, MobileNetV3, mobilenet_v3_digits,
                          mobilenet_v3_large, mobilenet_v3_small)
from .regnet import (AnyStage, BlockParams, BottleneckTransform, RegNet, ResBottleneckBlock, SimpleStemIN,
                     regnet_y_1_6gf, regnet_y_3_2gf, regnet_y_8gf, regnet_y_16gf, regnet_y_32gf, regnet_y_128gf,
                     regnet_y_400mf, regnet_y_800mf)

__all__ = [
    "get_model", "get_model_builder", "list_models", "default_input_size",
    "MobileNetV3", "InvertedResidual", "InvertedResidualConfig", "mobilenet_v3_large", "mobilenet_v3_small",
    "mobilenet_v3_digits",
    "EfficientNet", "MBConv", "FusedMBConv", "MBConvConfig", "FusedMBConvConfig",
    "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "efficientnet_b4",
    "efficientnet_b5", "efficientnet_b6", "efficientnet_b7",
    "efficientnet_v2_s", "efficientnet_v2_m", "efficientnet_v2_l",
    "RegNet", "SimpleStemIN", "BottleneckTransform", "ResBottleneckBlock", "AnyStage", "BlockParams",
    "regnet_y_400mf", "regnet_y_800mf", "regnet_y_1_6gf", "regnet_y_3_2gf", "regnet_y_8gf", "regnet_y_16gf",
    "regnet_y_32gf", "regnet_y_128gf",
    "MaxVit", "maxvit_t",
]

# the weights enums under torchvision's names (EfficientNet_B0_Weights, ...), one per row group of weights.py's table
WeightsEnum, Weights, get_weight, get_model_weights = (_weights.WeightsEnum, _weights.Weights, _weights.get_weight,
                                                       _weights.get_model_weights)
globals().update(_weights.FAMILIES)
__all__ += ["WeightsEnum", "Weights", "get_weight", "get_model_weights", *_weights.FAMILIES]
