"""Every differentiable operation, as `Function` subclasses and thin helpers."""
from .activation import Activation, LogSoftmax, Softmax
from .arithmetic import Abs, Add, Cast, Clamp, Clone, Div, Exp, Log, MatMul, Mul, Neg, Pow, Sqrt, Sub, matmul
from .conv import Conv2d, Linear
from .conv_norm import ConvNormActivation
from .loss import CrossEntropy, Dropout
from .layer_norm import LayerNorm
from .norm import BatchNorm
from .pooling import AdaptiveAvgPool2d, AvgPool2d, MaxPool2d
from .reduction import Amax, Mean, Sum, normalize_dims
from .se import SqueezeExcitation
from .shape import cat, expand, flatten, index, permute, reshape, squeeze, stack, transpose, unsqueeze
