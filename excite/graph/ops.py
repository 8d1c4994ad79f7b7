"""What a captured Function becomes in the graph: its op, inputs and attributes, and torch's name for it.

The ops the passes and the executor know by name are listed in `normalize`; any other Function
is kept as op ``"function"`` with its class and keyword arguments, and runs through its own
``forward`` — so everything that runs eagerly can be captured and compiled.
"""
import inspect

from ..autograd import functions as fn
from ..autograd.functions.shape import Flatten, Reshape

# torch's function names, which torch.fx (and torchvision's feature extraction) name nodes by
_TORCH_NAMES = {
    fn.Add: "add", fn.Sub: "sub", fn.Mul: "mul", fn.Div: "truediv", fn.MatMul: "matmul", fn.Neg: "neg",
    fn.Pow: "pow", fn.Exp: "exp", fn.Log: "log", fn.Sqrt: "sqrt", Reshape: "reshape", Flatten: "flatten",
    fn.Softmax: "softmax", fn.LogSoftmax: "log_softmax", fn.Conv2d: "conv2d", fn.Linear: "linear",
    fn.BatchNorm: "batch_norm", fn.AdaptiveAvgPool2d: "adaptive_avg_pool2d", fn.Mean: "mean", fn.Sum: "sum",
    fn.Dropout: "dropout", fn.SqueezeExcitation: "squeeze_excitation", fn.ConvNormActivation: "conv_norm_activation",
}
_BINARY = {fn.Add: "add", fn.Sub: "sub", fn.Mul: "mul", fn.Div: "div"}


def torch_name(function, args, kwargs):
    """The name torch.fx would give a call of this Function (``relu`` for a ReLU activation)."""
    if function is fn.Activation:
        return args[1] if len(args) > 1 else kwargs["name"]
    return _TORCH_NAMES.get(function, function.__name__.lower())


def normalize(function, args, kwargs):
    """``(op, inputs, attrs)`` for one application of ``function``; ``args`` / ``kwargs`` hold graph
    Values (for tensors) and plain Python values, as the Function was applied."""
    a = bind(function, args, kwargs)
    if function is fn.Conv2d:
        return "conv2d", [a["x"], a["w"], a["b"]], dict(
            stride=tuple(a["stride"]), padding=tuple(a["padding"]), dilation=tuple(a["dilation"]),
            groups=int(a["groups"]))
    if function is fn.Linear:
        return "linear", [a["x"], a["w"], a["b"]], {}
    if function is fn.Activation:
        return "activation", [a["x"]], dict(activation=a["name"])
    if function is fn.BatchNorm:
        return "batch_norm", [a[k] for k in ("x", "running_mean", "running_var", "weight", "bias")], dict(
            training=bool(a["training"]), momentum=a["momentum"], eps=float(a["eps"]), activation=a["activation"])
    if function is fn.SqueezeExcitation:
        return "se", [a[k] for k in ("x", "w1", "b1", "w2", "b2")], dict(
            activation=a["activation"], scale_activation=a["scale_activation"])
    if function in _BINARY:
        return _BINARY[function], [a["a"], a["b"]], {}
    if function in (Reshape, Flatten):
        return "reshape", [a["a"]], dict(shape=tuple(a["shape"]))
    if function is fn.AdaptiveAvgPool2d:
        return "adaptive_avg_pool2d", [a["x"]], dict(output_size=a["output_size"])
    return "function", list(args), dict(kwargs, function=function)


_SIGNATURES = {}


def bind(function, args, kwargs):
    """The Function's forward arguments by name, defaults filled in."""
    signature = _SIGNATURES.get(function)
    if signature is None:
        signature = _SIGNATURES[function] = inspect.signature(function.forward)
    bound = signature.bind(None, *args, **kwargs)
    bound.apply_defaults()
    arguments = dict(bound.arguments)
    arguments.pop("self", None)
    return arguments
