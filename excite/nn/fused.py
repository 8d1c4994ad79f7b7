"""Fast paths for composite blocks: Conv2dNormActivation and SqueezeExcitation as fused kernels.

Each function returns the block's output, or None when the block does not qualify (unknown
layer types, forward hooks, string padding, ...) and the caller must run the plain path.
Only exact layer types qualify: a subclass may override ``forward``.
"""
from ..autograd.functions.norm import BatchNorm as _BatchNormFunction
from ..autograd.functions.se import SqueezeExcitation as _SqueezeExcitationFunction
from ..autograd.grad_mode import is_grad_enabled
from ..kernels.fused import conv_bn_act_inference
from ..kernels.norm import batch_norm_affine
from ..tensor import Tensor
from .activation import Hardsigmoid, Hardswish, ReLU, ReLU6, Sigmoid, SiLU
from .conv import Conv2d
from .norm import BatchNorm2d
from .pooling import AdaptiveAvgPool2d

_ACTIVATION_NAMES = {ReLU: "relu", ReLU6: "relu6", Hardswish: "hardswish", Hardsigmoid: "hardsigmoid",
                     SiLU: "silu", Sigmoid: "sigmoid"}


def _hooked(module):
    return bool(module._forward_pre_hooks or module._forward_hooks)


def _activation_name(module):
    if module is None:
        return None, True
    name = _ACTIVATION_NAMES.get(type(module))
    return name, name is not None and not _hooked(module)


def _plain_conv(conv):
    return type(conv) is Conv2d and conv.padding_mode == "zeros"


def _records_graph(input, *modules):
    if not is_grad_enabled():
        return False
    return input.requires_grad or any(p.requires_grad for m in modules for p in m.parameters())


def _plan(block):
    """(conv, norm or None, activation name) if the block's layers qualify, else None; cached
    on the block and rebuilt when its children change."""
    layers = tuple(block._modules.values())
    cached = block.__dict__.get("_fusion_plan")
    if cached is not None and cached[0] == layers:
        return cached[1]
    plan = None
    if 1 <= len(layers) <= 3 and _plain_conv(layers[0]):
        norm = layers[1] if len(layers) > 1 and type(layers[1]) is BatchNorm2d else None
        rest = layers[1 + (norm is not None):]
        activation, known = _activation_name(rest[0] if rest else None)
        if len(rest) <= 1 and known:
            plan = (layers[0], norm, activation)
    block.__dict__["_fusion_plan"] = (layers, plan)
    return plan


def conv_norm_activation(block, input):
    """``[Conv2d, BatchNorm2d?, activation?]`` fused, else None.

    Inference (no graph recorded, BatchNorm in eval): one kernel call. Otherwise, when there is a
    BatchNorm2d followed by an activation: the convolution, then `_batch_norm_activation`.
    """
    plan = _plan(block)
    if plan is None or not isinstance(input, Tensor) or input.ndim != 4:
        return None
    conv, norm, activation = plan
    if _hooked(conv) or (norm is not None and _hooked(norm)) or input.dtype.kind != "f":
        return None
    if input.shape[1] != conv.in_channels or isinstance(conv.padding, str):
        return None
    batch_statistics = norm is not None and (norm.training or norm.running_mean is None)
    if batch_statistics or _records_graph(input, *block._modules.values()):
        if norm is None or activation is None:
            return None
        # training (or a recorded graph): the convolution as usual, then batch norm and the
        # activation as one Function (one pass forward, the activation's backward folded into
        # batch norm's)
        return _batch_norm_activation(norm, conv(input), activation)
    scale = shift = None
    if norm is not None:
        weight = None if norm.weight is None else norm.weight.data
        bias = None if norm.bias is None else norm.bias.data
        scale, shift, _ = batch_norm_affine(norm.running_mean.data, norm.running_var.data, weight, bias, norm.eps)
    conv_bias = None if conv.bias is None else conv.bias.data
    out = conv_bn_act_inference(input.data, conv.weight.data, conv_bias, _pair(conv.stride), _pair(conv.padding),
                                _pair(conv.dilation), conv.groups, scale, shift, activation)
    return Tensor(out)


def _batch_norm_activation(norm, input, activation):
    """``activation(norm(input))`` as one BatchNorm Function; the same state updates as
    ``_BatchNorm.forward`` (num_batches_tracked, cumulative average when momentum is None)."""
    if input.ndim != 4 or input.shape[1] != norm.num_features:
        return None  # let the plain path raise its error
    if norm.training and input.data.size // input.shape[1] <= 1:
        return None
    factor = 0.0 if norm.momentum is None else norm.momentum
    if norm.training and norm.track_running_stats and norm.num_batches_tracked is not None:
        norm.num_batches_tracked.data += 1
        if norm.momentum is None:
            factor = 1.0 / float(norm.num_batches_tracked.data)
    bn_training = norm.training or (norm.running_mean is None and norm.running_var is None)
    use_stats = not norm.training or norm.track_running_stats
    return _BatchNormFunction.apply(input, norm.running_mean if use_stats else None,
                                    norm.running_var if use_stats else None, norm.weight, norm.bias,
                                    training=bn_training, momentum=factor, eps=norm.eps, activation=activation)


def _pair(v):
    return (v, v) if isinstance(v, int) else tuple(v)


def squeeze_excitation(block, input):
    """The whole SE block as one differentiable fused Function, else None."""
    act, known_act = _activation_name(block.activation)
    gate, known_gate = _activation_name(block.scale_activation)
    if not (known_act and known_gate) or act is None or gate is None:
        return None
    pool, fc1, fc2 = block.avgpool, block.fc1, block.fc2
    if type(pool) is not AdaptiveAvgPool2d or _hooked(pool) or pool.output_size not in (1, (1, 1)):
        return None
    for fc in (fc1, fc2):
        if not _plain_conv(fc) or _hooked(fc) or fc.kernel_size != (1, 1) or fc.groups != 1:
            return None
        if _pair(fc.stride) != (1, 1) or _pair(fc.padding) != (0, 0) or _pair(fc.dilation) != (1, 1):
            return None
    if not isinstance(input, Tensor) or input.dtype.kind != "f" or fc1.weight.dtype != input.dtype:
        return None
    return _SqueezeExcitationFunction.apply(input, fc1.weight, fc1.bias, fc2.weight, fc2.bias,
                                            activation=act, scale_activation=gate)
