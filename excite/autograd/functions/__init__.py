"""Every differentiable operation, as `Function` subclasses and thin helpers.

The layers above (nn, graph, onnx) reach the kernels' shared facts through here: the one registry of
activations (`activations`) and the convolution output size.
"""
from ...kernels import activations
from ...kernels.conv import output_size
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
