"""Fast paths for composite blocks: Conv2dNormActivation and SqueezeExcitation as fused kernels.

Each function returns the block's output, or None when the block does not qualify (unknown
layer types, forward hooks, string padding, ...) and the caller must run the plain path.
Only exact layer types qualify: a subclass may override ``forward``.
"""
from ..autograd.functions.norm import BatchNorm as _BatchNormFunction
from ..autograd.functions.se import SqueezeExcitation as _SqueezeExcitationFunction
from ..autograd.grad_mode import is_grad_enabled
from ..kernels.conv import output_size
from ..kernels.fused import conv_bn_act_inference
from ..tensor import Tensor
from ._utils import pair
from .activation import module_record
from .conv import Conv2d
from .norm import BatchNorm2d
from .pooling import AdaptiveAvgPool2d

def _hooked(module):
    return bool(module._forward_pre_hooks or module._forward_hooks)


def _activation_name(module):
    if module is None:
        return None, True
    record = module_record(module)
    return (None, False) if record is None else (record.name, not _hooked(module))


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


def conv_norm_activation(block, input, residual=None):
    """``[Conv2d, BatchNorm2d?, activation?]`` fused (plus ``residual`` if given), else None.

    Inference (no graph recorded, BatchNorm in eval): one kernel call, the residual add included.
    Otherwise, when there is a BatchNorm2d followed by an activation and no residual: the
    convolution, then `_batch_norm_activation`.
    """
    plan = _plan(block)
    if plan is None or not isinstance(input, Tensor) or input.ndim != 4:
        return None
    conv, norm, activation = plan
    if _hooked(conv) or (norm is not None and _hooked(norm)) or input.dtype.kind != "f":
        return None
    if input.shape[1] != conv.in_channels or isinstance(conv.padding, str):
        return None
    batch_statistics = norm is not None and (norm.training or norm._buffers["running_mean"] is None)
    if residual is not None and not (isinstance(residual, Tensor) and residual.shape == _output_shape(conv, input)):
        return None  # the plain path broadcasts (or raises) as an add would
    if batch_statistics or (is_grad_enabled() and (_records_graph(input, *block._modules.values()) or (
            residual is not None and _records_graph(residual)))):
        if norm is None or activation is None or residual is not None:
            return None
        # training (or a recorded graph): the convolution as usual, then batch norm and the
        # activation as one Function (one pass forward, the activation's backward folded into
        # batch norm's)
        return _batch_norm_activation(norm, conv(input), activation)
    stats = None
    if norm is not None:
        params = norm._parameters
        weight, bias = params["weight"], params["bias"]
        buffers = norm._buffers
        stats = (buffers["running_mean"].data, buffers["running_var"].data, None if weight is None else weight.data,
                 None if bias is None else bias.data, norm.eps)
    conv_bias = conv._parameters["bias"]
    out = conv_bn_act_inference(input.data, conv._parameters["weight"].data,
                                None if conv_bias is None else conv_bias.data, pair(conv.stride),
                                pair(conv.padding), pair(conv.dilation), conv.groups, stats, activation,
                                None if residual is None else residual.data)
    return Tensor(out)


def _batch_norm_activation(norm, input, activation):
    """``activation(norm(input))`` as one BatchNorm Function (the state update is the module's own)."""
    if input.ndim != 4 or input.shape[1] != norm.num_features:
        return None  # let the plain path raise its error
    if norm.training and input.data.size // input.shape[1] <= 1:
        return None
    running_mean, running_var, weight, bias, training, momentum, eps = norm.batch_norm_arguments()
    return _BatchNormFunction.apply(input, running_mean, running_var, weight, bias, training=training,
                                    momentum=momentum, eps=eps, activation=activation)


def _output_shape(conv, input):
    n, _, h, w = input.shape
    (kh, kw), (sh, sw), (ph, pw), (dh, dw) = (pair(v) for v in (conv.kernel_size, conv.stride, conv.padding,
                                                                  conv.dilation))
    return n, conv.out_channels, output_size(h, kh, sh, ph, dh), output_size(w, kw, sw, pw, dw)


def squeeze_excitation(block, input):
    """The whole SE block as one differentiable fused Function, else None."""
    act, known_act = _activation_name(block.activation)
    gate, known_gate = _activation_name(block.scale_activation)
    if not (known_act and known_gate) or act is None or gate is None:
        return None
    children = block._modules
    pool, fc1, fc2 = children["avgpool"], children["fc1"], children["fc2"]
    if type(pool) is not AdaptiveAvgPool2d or _hooked(pool) or pool.output_size not in (1, (1, 1)):
        return None
    if not (_unit_conv(fc1) and _unit_conv(fc2)):
        return None
    w1, w2 = fc1._parameters["weight"], fc2._parameters["weight"]
    if not isinstance(input, Tensor) or input.dtype.kind != "f" or w1.dtype != input.dtype:
        return None
    return _SqueezeExcitationFunction.apply(input, w1, fc1._parameters["bias"], w2, fc2._parameters["bias"],
                                            activation=act, scale_activation=gate)


def _unit_conv(fc):
    """A plain 1x1 Conv2d: stride 1, no padding or dilation, one group, no hooks."""
    return (_plain_conv(fc) and not _hooked(fc) and fc.kernel_size == (1, 1) and fc.groups == 1
            and fc.stride in ((1, 1), 1) and fc.padding in ((0, 0), 0) and fc.dilation in ((1, 1), 1))


def residual_block(block, input, stochastic_depth=None):
    """``stochastic_depth(block(input)) + input`` with the add fused into the last convolution
    (inference only: eval-mode stochastic depth is the identity), else None.

    ``block`` must be a plain Sequential whose last layer is a ConvNormActivation; the earlier
    layers run as usual. Used by the residual blocks of MobileNetV3 and EfficientNet.
    """
    from .container import Sequential
    from .misc import ConvNormActivation

    if type(block) is not Sequential or _hooked(block) or not isinstance(input, Tensor) or is_grad_enabled():
        return None
    if stochastic_depth is not None and (stochastic_depth.training or _hooked(stochastic_depth)):
        return None
    layers = tuple(block._modules.values())
    if not layers or not isinstance(layers[-1], ConvNormActivation) or _hooked(layers[-1]):
        return None
    if type(layers[-1]).forward is not ConvNormActivation.forward:
        return None
    x = input
    for layer in layers[:-1]:
        x = layer(x)
    out = conv_norm_activation(layers[-1], x, residual=input)
    if out is None:
        out = layers[-1](x)
        if stochastic_depth is not None:
            out = stochastic_depth(out)
        out = out + input
    return out
