"""torchvision-compatible SE networks: MobileNetV3 and EfficientNet (V1, V2) builders, the model registry and weights."""
from .. import weights as _weights
from ._registry import default_input_size, get_model, get_model_builder, list_models
from .efficientnet import (EfficientNet, FusedMBConv, FusedMBConvConfig, MBConv, MBConvConfig, efficientnet_b0,
                           efficientnet_b1, efficientnet_b2, efficientnet_b3, efficientnet_b4, efficientnet_b5,
                           efficientnet_b6, efficientnet_b7, efficientnet_v2_l, efficientnet_v2_m, efficientnet_v2_s)
from .mobilenetv3 import (InvertedResidual, InvertedResidualConfig, MobileNetV3, mobilenet_v3_digits,
                          mobilenet_v3_large, mobilenet_v3_small)

__all__ = [
    "get_model", "get_model_builder", "list_models", "default_input_size",
    "MobileNetV3", "InvertedResidual", "InvertedResidualConfig", "mobilenet_v3_large", "mobilenet_v3_small",
    "mobilenet_v3_digits",
    "EfficientNet", "MBConv", "FusedMBConv", "MBConvConfig", "FusedMBConvConfig",
    "efficientnet_b0", "efficientnet_b1", "efficientnet_b2", "efficientnet_b3", "efficientnet_b4",
    "efficientnet_b5", "efficientnet_b6", "efficientnet_b7",
    "efficientnet_v2_s", "efficientnet_v2_m", "efficientnet_v2_l",
]

# the weights enums under torchvision's names (EfficientNet_B0_Weights, ...), one per row group of weights.py's table
WeightsEnum, Weights, get_weight, get_model_weights = (_weights.WeightsEnum, _weights.Weights, _weights.get_weight,
                                                       _weights.get_model_weights)
globals().update(_weights.FAMILIES)
__all__ += ["WeightsEnum", "Weights", "get_weight", "get_model_weights", *_weights.FAMILIES]
