"""Graph IR -> ONNX nodes: one lowering per op of `excite.graph`, and a registry for other Functions."""
import numpy as np

from ..autograd import functions as fn
from ..autograd.functions.shape import Permute
from ..errors import InvalidArgumentError
from ..graph.ops import bind
from ..kernels import activations
from ..kernels.norm import batch_norm_affine
from ..nn.functional import _Pad
from ._graph import Value

_FUNCTIONS = {}  # autograd Function class -> lowering(ctx, node, arguments) -> Value


def register_op(function_class):
    """Decorator: ``lower(ctx, node, args) -> Value`` exports graph nodes of ``function_class`` (an
    ``excite.autograd.Function`` the exporter does not know). ``args`` holds the Function's forward
    arguments by name (graph values as ONNX names via ``ctx.name(v)``); add nodes with
    ``ctx.node(op_type, inputs, node, **attributes)`` and constants with ``ctx.constant(hint, array)``."""

    def decorate(lower):
        _FUNCTIONS[function_class] = lower
        return lower

    return decorate


def _where(node):
    return f"node {node.name!r}" + (f" (in {node.scope!r})" if node.scope and node.scope != node.name else "")


class LoweringContext:
    """What lowerings share: the ONNX graph builder, names of the values emitted so far, the options."""

    def __init__(self, builder, input_names, dynamic_batch, opset):
        self.builder = builder
        self.names = dict(input_names)  # graph Value -> ONNX name
        self.dynamic_batch = dynamic_batch
        self.opset = opset

    def name(self, value):
        """The ONNX name of a graph value (parameters as initializers named by their state_dict key)."""
        if not hasattr(value, "producer"):
            return self.constant("constant", np.asarray(value, dtype=self.builder.dtype))
        name = self.names.get(value)
        if name is not None:
            return name
        if value.kind == "parameter":
            name = self.builder.parameter(value.name, value.data)
        elif value.kind == "constant":
            name = self.builder.constant(value.name, value.data)
        else:
            raise InvalidArgumentError(f"value {value.name!r} is used before the node that computes it")
        self.names[value] = name
        return name

    def constant(self, hint, array, dtype=None):
        return self.builder.constant(hint, array, dtype)

    def node(self, op_type, inputs, node, shape=None, **attributes):
        return self.builder.node(op_type, inputs, node.output.shape if shape is None else shape, node.name,
                                 **attributes)

    def lower(self, node):
        lowering = _OPS.get(node.op)
        if node.op == "function":
            function = node.attrs["function"]
            lowering = _FUNCTIONS.get(function)
            if lowering is None:
                raise InvalidArgumentError(
                    f"cannot export {_where(node)} to ONNX: the exporter has no lowering for the Function "
                    f"{function.__qualname__}; register one with excite.onnx.register_op({function.__qualname__})")
            args = bind(function, node.inputs, {k: v for k, v in node.attrs.items() if k != "function"})
            value = lowering(self, node, args)
        elif lowering is None:
            raise InvalidArgumentError(f"cannot export {_where(node)} to ONNX: no lowering for op {node.op!r}")
        else:
            value = lowering(self, node)
        self.names[node.output] = value.name
        return value


# ----- the graph's own ops ------------------------------------------------------------------------------
def _conv2d(ctx, node):
    x, w, b = node.inputs[:3]
    a = node.attrs
    kh, kw = w.shape[2:]
    ph, pw = a["padding"]
    if "scale" in a:  # batch norm folded by the pass: its scale goes into the weight, its shift is the bias
        scale = a["scale"].astype(np.float64)
        weight = ctx.constant(f"{node.name}.weight_bn_folded", w.data.astype(np.float64) * scale[:, None, None, None])
        inputs = [ctx.name(x), weight, ctx.constant(f"{node.name}.bias_bn_folded", a["shift"])]
    else:
        inputs = [ctx.name(x), ctx.name(w)] + ([ctx.name(b)] if b is not None else [])
    y = ctx.node("Conv", inputs, node, kernel_shape=[kh, kw], strides=list(a["stride"]), pads=[ph, pw, ph, pw],
                 dilations=list(a["dilation"]), group=a["groups"])
    if a.get("activation") is not None:
        y = _activation_value(ctx, node, a["activation"], y)
    if a.get("residual"):
        y = ctx.node("Add", [y.name, ctx.name(node.inputs[3])], node)
    return y


def _batch_norm(ctx, node):
    x, mean, var, weight, bias = node.inputs
    a = node.attrs
    if a["training"] or mean is None or var is None:
        raise InvalidArgumentError(
            f"cannot export {_where(node)} to ONNX: this batch norm has no running statistics "
            f"(track_running_stats=False) and normalises with batch statistics, which an inference graph "
            f"cannot reproduce")
    c = mean.shape[0]
    scale = ctx.name(weight) if weight is not None else ctx.constant(f"{node.name}.ones", np.ones(c))
    shift = ctx.name(bias) if bias is not None else ctx.constant(f"{node.name}.zeros", np.zeros(c))
    y = ctx.node("BatchNormalization", [ctx.name(x), scale, shift, ctx.name(mean), ctx.name(var)], node,
                 epsilon=float(a["eps"]))
    return _activation_value(ctx, node, a.get("activation"), y)


def _activation_value(ctx, node, name, x):
    record = activations.get(name)
    if record is None:
        return x

    def emit(op_type, *inputs, **attributes):
        return ctx.node(op_type, list(inputs), node, **attributes).name

    def constant(value):
        return ctx.constant(f"{node.name}.{record.name}", np.asarray(value, dtype=ctx.builder.dtype))

    return Value(record.onnx(emit, x.name, constant), node.output.shape)


def _activation(ctx, node):
    (x,) = node.inputs
    return _activation_value(ctx, node, node.attrs["activation"], Value(ctx.name(x), x.shape))


def _binary(op_type):
    def lower(ctx, node):
        return ctx.node(op_type, [ctx.name(v) for v in node.inputs], node)

    return lower


def _linear(ctx, node):
    x, w, b = node.inputs
    out_features, in_features = w.shape
    y_shape = node.output.shape
    if len(x.shape) == 2:
        inputs = [ctx.name(x), ctx.name(w)] + ([ctx.name(b)] if b is not None else [])
        y = ctx.node("Gemm", inputs, node, transB=1)
    else:
        weight_t = ctx.node("Transpose", [ctx.name(w)], node, shape=(in_features, out_features), perm=[1, 0])
        y = ctx.node("MatMul", [ctx.name(x), weight_t.name], node)
        if b is not None:
            y = ctx.node("Add", [y.name, ctx.name(b)], node, shape=y_shape)
    return _activation_value(ctx, node, node.attrs.get("activation"), y)


def _adaptive_avg_pool2d(ctx, node):
    (x,) = node.inputs
    h, w = x.shape[2:]
    oh, ow = node.output.shape[2:]
    if (oh, ow) == (1, 1):
        return ctx.node("GlobalAveragePool", [ctx.name(x)], node)
    if h % oh or w % ow:
        raise InvalidArgumentError(
            f"cannot export {_where(node)} to ONNX: output_size {(oh, ow)} does not divide the input size {(h, w)}, "
            f"so the pooling windows overlap unevenly and have no ONNX equivalent; export at a resolution that "
            f"is a multiple of the output size")
    kernel = [h // oh, w // ow]
    return ctx.node("AveragePool", [ctx.name(x)], node, kernel_shape=kernel, strides=kernel)


def _reshape(ctx, node):
    (x,) = node.inputs
    shape = tuple(node.output.shape)
    if len(shape) == 2 and len(x.shape) >= 2 and shape[0] == x.shape[0]:
        return ctx.node("Flatten", [ctx.name(x)], node, axis=1)
    target = list(shape)
    if ctx.dynamic_batch and x.shape:
        if not target or target[0] != x.shape[0] or int(np.prod(target[1:])) != int(np.prod(x.shape[1:])):
            raise InvalidArgumentError(
                f"cannot export {_where(node)} to ONNX with a dynamic batch: it reshapes {list(x.shape)} to "
                f"{list(shape)}, merging the batch dimension into the others; export with dynamic_batch=False")
        target[0] = 0  # copy the (dynamic) batch size, never bake it in
    constant = ctx.constant(f"{node.name}.shape", np.array(target, dtype=np.int64), dtype=np.int64)
    return ctx.node("Reshape", [ctx.name(x), constant], node)


_OPS = {"conv2d": _conv2d, "batch_norm": _batch_norm, "activation": _activation, "linear": _linear,
        "add": _binary("Add"), "sub": _binary("Sub"), "mul": _binary("Mul"), "div": _binary("Div"),
        "adaptive_avg_pool2d": _adaptive_avg_pool2d, "reshape": _reshape}


# ----- Functions that stay generic in the graph ----------------------------------------------------------
def _unary(op_type, **attributes):
    def lower(ctx, node, args):
        return ctx.node(op_type, [ctx.name(node.inputs[0])], node, **attributes)

    return lower


for _function, _op in ((fn.Neg, "Neg"), (fn.Exp, "Exp"), (fn.Log, "Log"), (fn.Sqrt, "Sqrt"), (fn.Abs, "Abs")):
    register_op(_function)(_unary(_op))


@register_op(fn.Softmax)
@register_op(fn.LogSoftmax)
def _softmax(ctx, node, args):
    op_type = "Softmax" if node.attrs["function"] is fn.Softmax else "LogSoftmax"
    axis = args["dim"] % len(node.inputs[0].shape)
    return ctx.node(op_type, [ctx.name(node.inputs[0])], node, axis=axis)


@register_op(Permute)
def _permute(ctx, node, args):
    x = node.inputs[0]
    return ctx.node("Transpose", [ctx.name(x)], node, perm=[d % len(x.shape) for d in args["dims"]])


@register_op(fn.Mean)
@register_op(fn.Sum)
def _reduce(ctx, node, args):
    x = node.inputs[0]
    dims = args["dim"]
    axes = list(range(len(x.shape))) if dims is None else [d % len(x.shape) for d in (
        dims if isinstance(dims, (tuple, list)) else (dims,))]
    op_type = "ReduceMean" if node.attrs["function"] is fn.Mean else "ReduceSum"
    keepdims = int(bool(args["keepdim"]))
    if op_type == "ReduceSum" or ctx.opset >= 18:  # axes became an input (ReduceSum in opset 13)
        axes_name = ctx.constant(f"{node.name}.axes", np.array(axes, dtype=np.int64), dtype=np.int64)
        return ctx.node(op_type, [ctx.name(x), axes_name], node, keepdims=keepdims)
    return ctx.node(op_type, [ctx.name(x)], node, axes=axes, keepdims=keepdims)


@register_op(fn.Pow)
def _pow(ctx, node, args):
    exponent = ctx.constant(f"{node.name}.exponent", np.asarray(args["exponent"], dtype=ctx.builder.dtype))
    return ctx.node("Pow", [ctx.name(node.inputs[0]), exponent], node)


@register_op(fn.Clamp)
def _clamp(ctx, node, args):
    bounds = [ctx.constant(f"{node.name}.{k}", np.asarray(args[k], dtype=ctx.builder.dtype)) if args[k] is not None
              else "" for k in ("lo", "hi")]
    return ctx.node("Clip", [ctx.name(node.inputs[0]), *bounds], node)


@register_op(fn.MatMul)
def _matmul(ctx, node, args):
    return ctx.node("MatMul", [ctx.name(v) for v in node.inputs], node)


@register_op(_Pad)
def _pad(ctx, node, args):
    left, right, top, bottom = args["pads"]
    pads = ctx.constant(f"{node.name}.pads", np.array([0, 0, top, left, 0, 0, bottom, right], dtype=np.int64),
                        dtype=np.int64)
    return ctx.node("Pad", [ctx.name(node.inputs[0]), pads], node)
