"""ONNX converters for the excite.nn layers: convolution, normalisation, activations, containers."""
import numpy as np

from .. import nn
from ..errors import InvalidArgumentError, ShapeError, shape_str
from ..kernels import activations
from ..nn._utils import pair
from ._graph import Value
from ._registry import as_array, find_converter, join, register_converter

def _layer(qualname, module):
    return f"layer {qualname or '<model>'!r} ({type(module).__name__})"


def _expect_4d(qualname, module, x, channels=None):
    if len(x.shape) != 4 or (channels is not None and x.shape[1] != channels):
        c = "C" if channels is None else channels
        raise ShapeError(f"{_layer(qualname, module)} expects input of shape [N, {c}, H, W], "
                         f"got {shape_str(x.shape)}")


# ----- convolution and batch norm -------------------------------------------------------
def _conv_pads(conv, kernel, dilation):
    padding = conv.padding
    if isinstance(padding, str):
        if padding == "valid":
            return [0, 0, 0, 0]
        totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
        # torch puts the odd element of 'same' padding at the bottom / right
        return [totals[0] // 2, totals[1] // 2, totals[0] - totals[0] // 2, totals[1] - totals[1] // 2]
    ph, pw = pair(padding)
    return [ph, pw, ph, pw]


def _bn_scale_shift(bn, qualname):
    """Per-channel (scale, shift) of an eval-mode BatchNorm, computed in float64."""
    mean, var = as_array(bn.running_mean), as_array(bn.running_var)
    if mean is None or var is None:
        raise InvalidArgumentError(
            f"{_layer(qualname, bn)} has no running statistics (track_running_stats=False): it normalises "
            f"with batch statistics, which an exported inference graph cannot reproduce"
        )
    gamma = as_array(bn.weight)
    beta = as_array(bn.bias)
    scale = (1.0 if gamma is None else gamma.astype(np.float64)) / np.sqrt(var.astype(np.float64) + bn.eps)
    shift = (0.0 if beta is None else beta.astype(np.float64)) - mean.astype(np.float64) * scale
    return scale, shift


def emit_conv(ctx, conv, qualname, x, bn=None, bn_qualname=None):
    """Conv2d, optionally with the BatchNorm2d that follows it folded into its weight and bias."""
    weight = as_array(conv.weight)
    out_channels, in_per_group, kh, kw = weight.shape
    groups = int(conv.groups)
    _expect_4d(qualname, conv, x, in_per_group * groups)
    if getattr(conv, "padding_mode", "zeros") != "zeros":
        raise InvalidArgumentError(f"{_layer(qualname, conv)}: padding_mode={conv.padding_mode!r} cannot be "
                                   f"exported, only 'zeros'")
    stride, dilation = pair(conv.stride), pair(conv.dilation)
    pads = _conv_pads(conv, (kh, kw), dilation)
    b = ctx.builder
    if bn is None:
        inputs = [x.name, ctx.parameter(qualname, "weight", conv.weight)]
        if conv.bias is not None:
            inputs.append(ctx.parameter(qualname, "bias", conv.bias))
        name = qualname
    else:
        scale, shift = _bn_scale_shift(bn, bn_qualname)
        folded_w = weight.astype(np.float64) * scale[:, None, None, None]
        bias = as_array(conv.bias)
        folded_b = shift if bias is None else bias.astype(np.float64) * scale + shift
        inputs = [x.name, b.constant(join(qualname, "weight_bn_folded"), folded_w),
                  b.constant(join(qualname, "bias_bn_folded"), folded_b)]
        name = f"{qualname}+{bn_qualname}"
    h, w = x.shape[2], x.shape[3]
    oh = (h + pads[0] + pads[2] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w + pads[1] + pads[3] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    if oh < 1 or ow < 1:
        raise ShapeError(f"{_layer(qualname, conv)}: kernel {kh}x{kw} is larger than its padded input "
                         f"{shape_str(x.shape)}")
    return b.node("Conv", inputs, (x.shape[0], out_channels, oh, ow), name, kernel_shape=[kh, kw],
                  strides=list(stride), pads=pads, dilations=list(dilation), group=groups)


@register_converter(nn.Conv2d, methods=("forward", "_conv_forward"))
def _conv2d(ctx, m, qualname, x):
    return emit_conv(ctx, m, qualname, x)


@register_converter(nn.BatchNorm2d)
def _batch_norm2d(ctx, m, qualname, x):
    _expect_4d(qualname, m, x, int(m.num_features))
    _bn_scale_shift(m, qualname)  # refuses a BatchNorm without running statistics
    c = int(m.num_features)
    b = ctx.builder
    scale = (ctx.parameter(qualname, "weight", m.weight) if m.weight is not None
             else b.constant(join(qualname, "ones"), np.ones(c)))
    shift = (ctx.parameter(qualname, "bias", m.bias) if m.bias is not None
             else b.constant(join(qualname, "zeros"), np.zeros(c)))
    inputs = [x.name, scale, shift, ctx.parameter(qualname, "running_mean", m.running_mean),
              ctx.parameter(qualname, "running_var", m.running_var)]
    return b.node("BatchNormalization", inputs, x.shape, qualname, epsilon=float(m.eps))


# ----- linear ---------------------------------------------------------------------------
@register_converter(nn.Linear)
def _linear(ctx, m, qualname, x):
    out_features, in_features = as_array(m.weight).shape
    if len(x.shape) < 1 or x.shape[-1] != in_features:
        raise ShapeError(f"{_layer(qualname, m)} expects input of shape [..., {in_features}], got "
                         f"{shape_str(x.shape)}")
    b = ctx.builder
    weight = ctx.parameter(qualname, "weight", m.weight)
    out_shape = tuple(x.shape[:-1]) + (out_features,)
    if len(x.shape) == 2:
        inputs = [x.name, weight] + ([ctx.parameter(qualname, "bias", m.bias)] if m.bias is not None else [])
        return b.node("Gemm", inputs, out_shape, qualname, transB=1)
    weight_t = b.node("Transpose", [weight], (in_features, out_features), qualname, perm=[1, 0])
    y = b.node("MatMul", [x.name, weight_t.name], out_shape, qualname)
    if m.bias is None:
        return y
    return b.node("Add", [y.name, ctx.parameter(qualname, "bias", m.bias)], out_shape, qualname)


# ----- activations: each record of the registry brings its lowering ----------------------------
def emit_activation(ctx, record, qualname, x):
    """``record.onnx`` (`excite.kernels.activations`) as nodes of the graph; returns the output Value."""
    b = ctx.builder

    def emit(op_type, *inputs, **attributes):
        return b.node(op_type, list(inputs), x.shape, qualname, **attributes).name

    def constant(value):
        return b.constant(join(qualname, record.name), np.asarray(value, dtype=b.dtype))

    return Value(record.onnx(emit, x.name, constant), x.shape)


@register_converter(nn.ActivationModule)
def _activation(ctx, m, qualname, x):
    return emit_activation(ctx, activations.get(type(m).activation), qualname, x)


# ----- layers that are the identity at inference time -------------------------------------
def _passthrough(ctx, m, qualname, x):
    return x


for _name in ("Identity", "Dropout", "StochasticDepth"):
    register_converter(getattr(nn, _name))(_passthrough)


# ----- pooling and reshaping --------------------------------------------------------------
@register_converter(nn.AdaptiveAvgPool2d)
def _adaptive_avg_pool2d(ctx, m, qualname, x):
    _expect_4d(qualname, m, x)
    h, w = x.shape[2], x.shape[3]
    size = m.output_size
    size = (size, size) if np.isscalar(size) or size is None else tuple(size)
    oh, ow = (h if size[0] is None else int(size[0])), (w if size[1] is None else int(size[1]))
    b = ctx.builder
    if (oh, ow) == (1, 1):
        return b.node("GlobalAveragePool", [x.name], (x.shape[0], x.shape[1], 1, 1), qualname)
    if h % oh or w % ow:
        raise InvalidArgumentError(
            f"{_layer(qualname, m)}: output_size {(oh, ow)} does not divide the input size {(h, w)}, so the "
            f"pooling windows overlap unevenly and have no ONNX equivalent; export at a resolution that "
            f"is a multiple of the output size"
        )
    kernel = [h // oh, w // ow]
    return b.node("AveragePool", [x.name], (x.shape[0], x.shape[1], oh, ow), qualname, kernel_shape=kernel,
                  strides=kernel)


def emit_flatten(ctx, qualname, x, start_dim=1, end_dim=-1):
    ndim = len(x.shape)
    start = start_dim + ndim if start_dim < 0 else start_dim
    end = end_dim + ndim if end_dim < 0 else end_dim
    if not 0 <= start <= end < max(ndim, 1):
        raise InvalidArgumentError(f"flatten {qualname or '<model>'!r}: dims {start_dim}..{end_dim} are out of "
                                   f"range for an input of shape {shape_str(x.shape)}")
    if start == 0 and end > 0 and ctx.dynamic_batch:
        raise InvalidArgumentError(f"flatten {qualname or '<model>'!r}: start_dim={start_dim} merges the batch "
                                   f"dimension into the others, which a dynamic-batch graph cannot declare; "
                                   f"export with dynamic_batch=False")
    merged = int(np.prod(x.shape[start:end + 1]))
    out_shape = tuple(x.shape[:start]) + (merged,) + tuple(x.shape[end + 1:])
    b = ctx.builder
    if start == 1 and end == ndim - 1:
        return b.node("Flatten", [x.name], out_shape, qualname, axis=1)
    # the batch (dim 0) is dynamic: copy it (0) or let Reshape infer it (-1), never bake it in
    target = list(out_shape)
    target[0] = -1 if start == 0 else 0
    shape = b.constant(join(qualname, "shape"), np.array(target, dtype=np.int64), dtype=np.int64)
    return b.node("Reshape", [x.name, shape], out_shape, qualname)


@register_converter(nn.Flatten)
def _flatten(ctx, m, qualname, x):
    return emit_flatten(ctx, qualname, x, int(m.start_dim), int(m.end_dim))


# ----- containers and blocks ---------------------------------------------------------------
def _is_conv_then_bn(ctx, first, first_name, second, second_name):
    if not (ctx.fold_batchnorm and isinstance(first, nn.Conv2d) and isinstance(second, nn.BatchNorm2d)):
        return False
    # fold only layers their plain converters would export: subclasses with own forward stay separate
    return (find_converter(first, first_name) is _conv2d and find_converter(second, second_name) is _batch_norm2d
            and second.running_mean is not None)


@register_converter(nn.Sequential)
def _sequential(ctx, m, qualname, x):
    # _modules, as Sequential.forward uses it: named_children() would skip a layer used twice
    children = [(join(qualname, name), child) for name, child in m._modules.items() if child is not None]
    i = 0
    while i < len(children):
        name, child = children[i]
        if i + 1 < len(children) and _is_conv_then_bn(ctx, child, name, children[i + 1][1], children[i + 1][0]):
            x = emit_conv(ctx, child, name, x, bn=children[i + 1][1], bn_qualname=children[i + 1][0])
            i += 2
            continue
        x = ctx.call(child, name, x)
        i += 1
    return x


# its forward only adds a fused eval-mode fast path; the function is its children in order
register_converter(nn.ConvNormActivation)(_sequential)


@register_converter(nn.SqueezeExcitation, methods=("forward", "_scale"))
def _squeeze_excitation(ctx, m, qualname, x):
    scale = x
    for name in ("avgpool", "fc1", "activation", "fc2", "scale_activation"):
        scale = ctx.child(m, qualname, name, scale)
    return ctx.builder.node("Mul", [scale.name, x.name], x.shape, qualname)
