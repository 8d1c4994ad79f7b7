"""The functional API (`import excite.nn.functional as F`): validated wrappers over Functions."""
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from ..autograd import functions as fn
from ..autograd.functions import activations
from ..autograd.function import Function
from ..errors import InvalidArgumentError, ShapeError, shape_str
from ..random import generator
from ..tensor import Tensor
from ._utils import int_pair

_Pair = Union[int, Tuple[int, int]]  # an int, or one per spatial dim (torch's _size_2_t)
_Shape = Union[int, Sequence[int]]


def _require_tensor(x, op, name="input"):
    if not isinstance(x, Tensor):
        raise InvalidArgumentError(f"{op}: {name} must be a Tensor, got {type(x).__name__}")


def _require_float(x, op):
    _require_tensor(x, op)
    if x.dtype.kind != "f":
        raise InvalidArgumentError(f"{op}: expected a floating-point tensor, got dtype {x.dtype}")


# ----- activations: one functional per registry record (`excite.kernels.activations`) -----------------
def activation_functional(record):
    """``F.<record.name>``: torch's signature, ``inplace=`` accepted (and ignored: excite never overwrites
    an input autograd or another thread may still read) where torch has it."""
    name = record.name
    if record.inplace_argument:
        def functional(input, inplace=False):
            return fn.Activation.apply(input, name)
    else:
        def functional(input):
            return fn.Activation.apply(input, name)
    functional.__name__ = functional.__qualname__ = name
    functional.__module__ = __name__
    functional.__doc__ = f"``{record.doc or record.forward}``, elementwise (``torch.nn.functional.{name}``)."
    return functional


for _record in activations.records():
    globals()[_record.name] = activation_functional(_record)
del _record


def gelu(input: Tensor, approximate: str = "none") -> Tensor:
    """``torch.nn.functional.gelu``: ``x * Phi(x)``, or its tanh approximation (``approximate='tanh'``)."""
    if approximate not in ("none", "tanh"):
        raise InvalidArgumentError(f"gelu: approximate must be 'none' or 'tanh', got {approximate!r}")
    return fn.Activation.apply(input, "gelu" if approximate == "none" else "_gelu_tanh")


def layer_norm(input: Tensor, normalized_shape: _Shape, weight: Optional[Tensor] = None,
               bias: Optional[Tensor] = None, eps: float = 1e-5) -> Tensor:
    """``torch.nn.functional.layer_norm``: normalise over the last ``len(normalized_shape)`` dims."""
    _require_float(input, "layer_norm")
    shape = (normalized_shape,) if isinstance(normalized_shape, int) else tuple(normalized_shape)
    if not shape or tuple(input.shape[input.ndim - len(shape):]) != shape or input.ndim < len(shape):
        raise ShapeError(f"layer_norm: expected input with shape [*, {', '.join(map(str, shape))}], got "
                         f"{shape_str(input.shape)}")
    for name, t in (("weight", weight), ("bias", bias)):
        if t is not None and tuple(t.shape) != shape:
            raise ShapeError(f"layer_norm: {name} must have shape {shape_str(shape)}, got {shape_str(t.shape)}")
    _check_same_dtype("layer_norm", input, ("weight", weight), ("bias", bias))
    return fn.LayerNorm.apply(input, weight, bias, normalized_ndim=len(shape), eps=float(eps))


def softmax(input: Tensor, dim: int) -> Tensor:
    return fn.Softmax.apply(input, dim=dim)


def log_softmax(input: Tensor, dim: int) -> Tensor:
    return fn.LogSoftmax.apply(input, dim=dim)


# ----- convolution and linear -----------------------------------------------------------
def _unbatched(fn, input, *args, **kwargs):
    """torch accepts [C, H, W] for 2-D convs and pools: run as a batch of one."""
    return fn(input.unsqueeze(0), *args, **kwargs).squeeze(0)


def _check_same_dtype(op, input, *others):
    for name, t in others:
        if t is not None and isinstance(t, Tensor) and t.dtype != input.dtype:
            raise InvalidArgumentError(
                f"{op}: input and {name} must have the same dtype, got {input.dtype} and {t.dtype}"
            )


def conv2d(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None, stride: _Pair = 1,
           padding: Union[_Pair, str] = 0, dilation: _Pair = 1, groups: int = 1) -> Tensor:
    op = "conv2d"
    _require_float(input, op)
    _require_tensor(weight, op, "weight")
    if input.ndim == 3:
        return _unbatched(conv2d, input, weight, bias, stride, padding, dilation, groups)
    if input.ndim != 4:
        raise ShapeError(
            f"conv2d expects a 4-D input [N, C, H, W] (or 3-D [C, H, W]), got {shape_str(input.shape)}"
        )
    _check_same_dtype(op, input, ("weight", weight), ("bias", bias))
    if weight.ndim != 4:
        raise ShapeError(f"conv2d expects a 4-D weight [out, in/groups, kH, kW], got {shape_str(weight.shape)}")
    if not isinstance(groups, (int, np.integer)) or groups < 1:
        raise InvalidArgumentError(f"conv2d: groups must be a positive int, got {groups!r}")
    n, c, h, w = input.shape
    o, cg, kh, kw = weight.shape
    if c % groups or o % groups:
        raise InvalidArgumentError(
            f"conv2d: in_channels ({c}) and out_channels ({o}) must be divisible by groups ({groups})"
        )
    if cg * groups != c:
        raise ShapeError(
            f"conv2d: weight {shape_str(weight.shape)} with groups={groups} expects input of shape "
            f"[N, {cg * groups}, H, W], got {shape_str(input.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (o,):
        raise ShapeError(f"conv2d: bias must have shape [{o}], got {shape_str(bias.shape)}")
    stride = int_pair(stride, "stride", op)
    dilation = int_pair(dilation, "dilation", op)
    if min(stride) < 1 or min(dilation) < 1:
        raise InvalidArgumentError(f"conv2d: stride and dilation must be >= 1, got {stride} and {dilation}")
    if isinstance(padding, str):
        padding = _string_padding(padding, (kh, kw), stride, dilation)
        if isinstance(padding, tuple) and len(padding) == 4:
            # asymmetric 'same' padding: pad explicitly, then convolve without padding
            top, bottom, left, right = padding
            input = pad(input, (left, right, top, bottom))
            padding = (0, 0)
    else:
        padding = int_pair(padding, "padding", op)
        if min(padding) < 0:
            raise InvalidArgumentError(f"conv2d: padding must be >= 0, got {padding}")
    eh = h + 2 * padding[0] - dilation[0] * (kh - 1)
    ew = w + 2 * padding[1] - dilation[1] * (kw - 1)
    if eh < 1 or ew < 1:
        raise ShapeError(
            f"conv2d: the kernel ({kh}x{kw}, dilation {dilation}) is larger than the padded input "
            f"({h + 2 * padding[0]}x{w + 2 * padding[1]})"
        )
    return fn.Conv2d.apply(input, weight, bias, stride=stride, padding=padding, dilation=dilation, groups=int(groups))


def _string_padding(mode, kernel, stride, dilation):
    if mode == "valid":
        return (0, 0)
    if mode != "same":
        raise InvalidArgumentError(f"conv2d: padding must be 'same', 'valid' or ints, got {mode!r}")
    if stride != (1, 1):
        raise InvalidArgumentError("conv2d: padding='same' is not supported for strided convolutions")
    totals = [d * (k - 1) for k, d in zip(kernel, dilation)]
    if all(t % 2 == 0 for t in totals):
        return (totals[0] // 2, totals[1] // 2)
    # torch puts the extra element on the bottom/right
    return (totals[0] // 2, totals[0] - totals[0] // 2, totals[1] // 2, totals[1] - totals[1] // 2)


class _Pad(Function):
    def forward(self, x, pads):
        left, right, top, bottom = pads
        self.crop = (top, x.shape[2] + top, left, x.shape[3] + left)
        return np.pad(x, ((0, 0), (0, 0), (top, bottom), (left, right)))

    def backward(self, g):
        t, b, l, r = self.crop
        return (g[:, :, t:b, l:r],)


def pad(input: Tensor, pad: Sequence[int], mode: str = "constant", value: float = 0.0) -> Tensor:
    """Zero padding of the last two dims, ``pad = (left, right, top, bottom)``."""
    if mode != "constant" or value != 0:
        raise InvalidArgumentError("pad: only constant zero padding is supported")
    if len(pad) == 2:
        pad = (pad[0], pad[1], 0, 0)
    return _Pad.apply(input, pads=tuple(int(p) for p in pad))


def linear(input: Tensor, weight: Tensor, bias: Optional[Tensor] = None) -> Tensor:
    _require_float(input, "linear")
    _require_tensor(weight, "linear", "weight")
    if weight.ndim != 2:
        raise ShapeError(f"linear expects a 2-D weight [out_features, in_features], got {shape_str(weight.shape)}")
    if input.ndim < 1 or input.shape[-1] != weight.shape[-1]:
        raise ShapeError(
            f"linear: input's last dim must be in_features={weight.shape[-1]}, got input of shape "
            f"{shape_str(input.shape)}"
        )
    if bias is not None and tuple(bias.shape) != (weight.shape[0],):
        raise ShapeError(f"linear: bias must have shape [{weight.shape[0]}], got {shape_str(bias.shape)}")
    _check_same_dtype("linear", input, ("weight", weight), ("bias", bias))
    return fn.Linear.apply(input, weight, bias)


# ----- pooling --------------------------------------------------------------------------
def _check_4d(x, op):
    _require_float(x, op)
    if x.ndim != 4:
        raise ShapeError(f"{op} expects a 4-D input [N, C, H, W] (or 3-D [C, H, W]), got {shape_str(x.shape)}")


def adaptive_avg_pool2d(input: Tensor, output_size: Union[int, Tuple[Optional[int], Optional[int]]]) -> Tensor:
    op = "adaptive_avg_pool2d"
    _require_float(input, op)
    if input.ndim == 3:
        return _unbatched(adaptive_avg_pool2d, input, output_size)
    _check_4d(input, op)
    if isinstance(output_size, (tuple, list)):
        output_size = tuple(input.shape[2 + i] if s is None else s for i, s in enumerate(output_size))
    oh, ow = int_pair(output_size, "output_size", op)
    if oh < 1 or ow < 1:
        raise InvalidArgumentError(f"{op}: output_size must be >= 1, got {(oh, ow)}")
    return fn.AdaptiveAvgPool2d.apply(input, output_size=(oh, ow))


def _pool_args(op, input, kernel_size, stride, padding):
    _check_4d(input, op)
    kernel = int_pair(kernel_size, "kernel_size", op)
    stride = kernel if stride is None or stride == [] else int_pair(stride, "stride", op)
    padding = int_pair(padding, "padding", op)
    if min(kernel) < 1 or min(stride) < 1:
        raise InvalidArgumentError(f"{op}: kernel_size and stride must be >= 1, got {kernel}, {stride}")
    if padding[0] > kernel[0] // 2 or padding[1] > kernel[1] // 2:
        raise InvalidArgumentError(f"{op}: padding {padding} must be at most half of kernel_size {kernel}")
    return kernel, stride, padding


def avg_pool2d(input: Tensor, kernel_size: _Pair, stride: Optional[_Pair] = None, padding: _Pair = 0,
               ceil_mode: bool = False, count_include_pad: bool = True, divisor_override: Optional[int] = None) -> Tensor:
    _require_float(input, "avg_pool2d")
    if input.ndim == 3:
        return _unbatched(avg_pool2d, input, kernel_size, stride, padding, ceil_mode, count_include_pad,
                          divisor_override)
    kernel, stride, padding = _pool_args("avg_pool2d", input, kernel_size, stride, padding)
    return fn.AvgPool2d.apply(input, kernel=kernel, stride=stride, padding=padding, ceil_mode=ceil_mode,
                              count_include_pad=count_include_pad, divisor_override=divisor_override)


def max_pool2d(input: Tensor, kernel_size: _Pair, stride: Optional[_Pair] = None, padding: _Pair = 0,
               dilation: _Pair = 1, ceil_mode: bool = False, return_indices: bool = False):
    if return_indices:
        raise InvalidArgumentError("max_pool2d: return_indices=True is not supported")
    _require_float(input, "max_pool2d")
    if input.ndim == 3:
        return _unbatched(max_pool2d, input, kernel_size, stride, padding, dilation, ceil_mode)
    kernel, stride, padding = _pool_args("max_pool2d", input, kernel_size, stride, padding)
    dilation = int_pair(dilation, "dilation", "max_pool2d")
    return fn.MaxPool2d.apply(input, kernel=kernel, stride=stride, padding=padding, dilation=dilation,
                              ceil_mode=ceil_mode)


# ----- normalisation, dropout -----------------------------------------------------------
def batch_norm(input: Tensor, running_mean: Optional[Tensor], running_var: Optional[Tensor],
               weight: Optional[Tensor] = None, bias: Optional[Tensor] = None, training: bool = False,
               momentum: Optional[float] = 0.1, eps: float = 1e-5) -> Tensor:
    _require_float(input, "batch_norm")
    if input.ndim < 2:
        raise ShapeError(f"batch_norm expects an input of shape [N, C, ...], got {shape_str(input.shape)}")
    c = input.shape[1]
    for name, t in (("running_mean", running_mean), ("running_var", running_var), ("weight", weight),
                    ("bias", bias)):
        if t is not None and tuple(t.shape) != (c,):
            raise ShapeError(
                f"batch_norm: {name} must have shape [{c}] for an input of shape {shape_str(input.shape)}, "
                f"got {shape_str(t.shape)}"
            )
    if training:
        count = input.data.size // c
        if count <= 1:
            raise InvalidArgumentError(
                f"batch_norm: expected more than 1 value per channel when training, got input of shape "
                f"{shape_str(input.shape)}"
            )
    elif running_mean is None or running_var is None:
        raise InvalidArgumentError("batch_norm: running_mean and running_var are required when not training")
    return fn.BatchNorm.apply(input, running_mean, running_var, weight, bias, training=training,
                              momentum=momentum, eps=eps)


def dropout(input: Tensor, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    if not 0.0 <= p <= 1.0:
        raise InvalidArgumentError(f"dropout probability has to be between 0 and 1, but got {p}")
    if not training or p == 0.0:
        return input
    if p == 1.0:
        return input * 0.0
    keep = generator().random(input.shape) >= p
    mask = keep.astype(input.dtype) / np.asarray(1.0 - p, dtype=input.dtype)
    return fn.Dropout.apply(input, mask)


# ----- losses ---------------------------------------------------------------------------
def cross_entropy(input: Tensor, target: Tensor, weight: Optional[Tensor] = None, ignore_index: int = -100,
                  reduction: str = "mean", label_smoothing: float = 0.0) -> Tensor:
    op = "cross_entropy"
    _require_float(input, op)
    if reduction not in ("mean", "sum", "none"):
        raise InvalidArgumentError(f"{op}: reduction must be 'mean', 'sum' or 'none', got {reduction!r}")
    if not 0.0 <= label_smoothing <= 1.0:
        raise InvalidArgumentError(f"{op}: label_smoothing must be in [0, 1], got {label_smoothing}")
    t = target.data if isinstance(target, Tensor) else np.asarray(target)
    if input.ndim < 1:
        raise ShapeError(f"{op}: expected input of shape [N, C] or [C], got {shape_str(input.shape)}")
    if t.dtype.kind == "f":
        return _soft_cross_entropy(input, Tensor(t) if not isinstance(target, Tensor) else target,
                                   weight, reduction, label_smoothing)
    if t.dtype.kind not in "iu":
        raise InvalidArgumentError(f"{op}: target must hold class indices (int64), got dtype {t.dtype}")
    unbatched = input.ndim == 1
    logits = input.unsqueeze(0) if unbatched else input
    if unbatched:
        t = t.reshape(1)
    c = logits.shape[1]
    expected = (logits.shape[0],) + tuple(logits.shape[2:])
    if t.shape != expected:
        raise ShapeError(f"{op}: target of shape {shape_str(expected)} expected for input of shape "
                         f"{shape_str(input.shape)}, got {shape_str(t.shape)}")
    bad = (t != ignore_index) & ((t < 0) | (t >= c))
    if bad.any():
        raise InvalidArgumentError(
            f"{op}: target {int(t[bad].reshape(-1)[0])} is out of bounds for {c} classes (expected 0..{c - 1})"
        )
    w = None
    if weight is not None:
        w = weight.data if isinstance(weight, Tensor) else np.asarray(weight)
        if w.shape != (c,):
            raise ShapeError(f"{op}: weight must have shape [{c}], got {shape_str(w.shape)}")
    if logits.ndim > 2:  # [N, C, d1, ...] -> [N*d1*..., C]
        spatial = logits.shape[2:]
        logits = logits.reshape(logits.shape[0], c, -1).transpose(1, 2).reshape(-1, c)
        out = fn.CrossEntropy.apply(logits, t.reshape(-1), w, ignore_index=ignore_index, reduction=reduction,
                                    label_smoothing=label_smoothing)
        if reduction == "none":
            out = out.reshape((input.shape[0],) + spatial)
        return out
    out = fn.CrossEntropy.apply(logits, t.astype(np.int64), w, ignore_index=ignore_index, reduction=reduction,
                                label_smoothing=label_smoothing)
    if unbatched and reduction == "none":
        out = out.reshape(())
    return out


def _soft_cross_entropy(input, target, weight, reduction, label_smoothing):
    if tuple(target.shape) != tuple(input.shape):
        raise ShapeError(f"cross_entropy: probability targets must match input shape {shape_str(input.shape)}, "
                         f"got {shape_str(target.shape)}")
    c = input.shape[1] if input.ndim > 1 else input.shape[0]
    dim = 1 if input.ndim > 1 else 0
    if label_smoothing:
        target = target * (1 - label_smoothing) + label_smoothing / c
    logp = log_softmax(input, dim)
    if weight is not None:
        w = weight if isinstance(weight, Tensor) else Tensor(np.asarray(weight))
        logp = logp * w.reshape((c,) + (1,) * (input.ndim - 2)) if input.ndim > 1 else logp * w
    loss = -(logp * target).sum(dim)
    if reduction == "mean":
        # torch divides by the number of predictions: N times the spatial size
        return loss.sum() / max(loss.numel(), 1)
    if reduction == "sum":
        return loss.sum()
    return loss


def nll_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    t = target.data if isinstance(target, Tensor) else np.asarray(target)
    picked = input[np.arange(input.shape[0]), t]
    loss = -picked
    return loss.mean() if reduction == "mean" else loss.sum() if reduction == "sum" else loss


def mse_loss(input: Tensor, target: Tensor, reduction: str = "mean") -> Tensor:
    d = (input - target) ** 2
    return d.mean() if reduction == "mean" else d.sum() if reduction == "sum" else d
