"""Neural-network modules with PyTorch's semantics: `Module`, `Parameter`, layers and the SE block."""
from . import functional, init
from .activation import (GELU, ActivationModule, Hardsigmoid, Hardswish, ReLU, ReLU6, Sigmoid, SiLU, Softmax, Tanh,
                         register_activation)
from .container import ModuleList, Sequential
from .conv import Conv2d
from .dropout import Dropout
from .linear import Linear
from .loss import CrossEntropyLoss, MSELoss
from .misc import (Conv2dNormActivation, ConvNormActivation, Flatten, Identity, StochasticDepth,
                   stochastic_depth)
from .module import Module, ModuleAttributeError, StateDictError
from .norm import BatchNorm1d, BatchNorm2d, LayerNorm
from .parameter import Buffer, Parameter
from .pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from .se import SqueezeExcitation

__all__ = [
    "functional", "init", "Module", "Parameter", "Buffer", "StateDictError", "ModuleAttributeError",
    "Conv2d", "Linear", "BatchNorm1d", "BatchNorm2d", "LayerNorm", "GELU", "AdaptiveAvgPool2d", "AvgPool2d", "MaxPool2d", "Dropout",
    "ReLU", "ReLU6", "Sigmoid", "Tanh", "Hardsigmoid", "Hardswish", "SiLU", "Softmax", "Identity", "Flatten",
    "Sequential", "ModuleList", "StochasticDepth", "stochastic_depth", "ConvNormActivation",
    "Conv2dNormActivation", "SqueezeExcitation", "CrossEntropyLoss", "MSELoss", "ActivationModule",
    "register_activation",
]
