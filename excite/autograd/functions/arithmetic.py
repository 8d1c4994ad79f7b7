"""Differentiable arithmetic: + - * / neg pow exp log sqrt abs clamp matmul, casts and copies."""
import numpy as np

from ...errors import InvalidArgumentError, ShapeError, shape_str
from ...kernels import buffers
from ..function import Function


def _pooled_out(a, b):
    """A reused buffer (`kernels.buffers`) for ``ufunc(a, b)`` when the result is a large float array
    of an operand's shape and dtype (in that operand's layout, as NumPy lays it out), else None."""
    for x, other in ((a, b), (b, a)):
        if not (isinstance(x, np.ndarray) and x.dtype.kind == "f" and x.nbytes >= buffers.MIN_BYTES):
            continue
        shape = np.shape(other)
        broadcasts_to_x = len(shape) <= x.ndim and all(o in (1, s) for o, s in zip(shape[::-1], x.shape[::-1]))
        if broadcasts_to_x and np.result_type(a, b) == x.dtype:
            return buffers.empty_like(x)
    return None


def _elementwise(op, ufunc, a, b):
    """``ufunc(a, b)``; NumPy's broadcasting ValueError becomes a ShapeError naming both shapes.

    Checking after the fact keeps the common path free of a separate broadcast_shapes call. Large
    float results go into reused buffers (`kernels.buffers`).
    """
    try:
        out = _pooled_out(a, b)
        return ufunc(a, b) if out is None else ufunc(a, b, out=out)
    except ValueError:
        try:
            np.broadcast_shapes(np.shape(a), np.shape(b))
        except ValueError:
            raise ShapeError(
                f"{op}: shapes {shape_str(np.shape(a))} and {shape_str(np.shape(b))} cannot be broadcast together"
            ) from None
        raise


class Add(Function):
    def forward(self, a, b):
        return _elementwise("add", np.add, a, b)

    def backward(self, g):
        return g, g


class Sub(Function):
    def forward(self, a, b):
        return _elementwise("sub", np.subtract, a, b)

    def backward(self, g):
        return g, (-g if self.needs_input_grad[1] else None)


class Mul(Function):
    def forward(self, a, b):
        self.save_for_backward(a, b)
        return _elementwise("mul", np.multiply, a, b)

    def backward(self, g):
        a, b = self.saved_tensors
        return (_elementwise("mul", np.multiply, g, b) if self.needs_input_grad[0] else None,
                _elementwise("mul", np.multiply, g, a) if self.needs_input_grad[1] else None)


class Div(Function):
    def forward(self, a, b):
        self.save_for_backward(a, b)
        return _elementwise("div", np.true_divide, a, b)

    def backward(self, g):
        a, b = self.saved_tensors
        ga = g / b if self.needs_input_grad[0] else None
        gb = -g * a / (b * b) if self.needs_input_grad[1] else None
        return ga, gb


class Neg(Function):
    def forward(self, a):
        return -a

    def backward(self, g):
        return (-g,)


class Pow(Function):
    def forward(self, a, exponent):
        if not isinstance(exponent, (int, float, np.number)):
            raise InvalidArgumentError(f"pow: expected a scalar exponent, got {type(exponent).__name__}")
        self.save_for_backward(a)
        self.exponent = exponent
        try:
            return a ** exponent
        except ValueError as e:  # e.g. integers to negative integer powers
            raise InvalidArgumentError(f"pow: cannot raise a {a.dtype} tensor to {exponent!r}: {e}") from None

    def backward(self, g):
        (a,) = self.saved_tensors
        e = self.exponent
        if e == 0:
            return (np.zeros_like(g),)
        return (g * e * a ** (e - 1),)


class Exp(Function):
    def forward(self, a):
        y = np.exp(a)
        self.save_for_backward(y)
        return y

    def backward(self, g):
        (y,) = self.saved_tensors
        return (g * y,)


class Log(Function):
    def forward(self, a):
        self.save_for_backward(a)
        return np.log(a)

    def backward(self, g):
        (a,) = self.saved_tensors
        return (g / a,)


class Sqrt(Function):
    def forward(self, a):
        y = np.sqrt(a)
        self.save_for_backward(y)
        return y

    def backward(self, g):
        (y,) = self.saved_tensors
        return (g / (2 * y),)


class Abs(Function):
    def forward(self, a):
        self.save_for_backward(a)
        return np.abs(a)

    def backward(self, g):
        (a,) = self.saved_tensors
        return (g * np.sign(a),)


class Clamp(Function):
    def forward(self, a, lo=None, hi=None):
        self.save_for_backward(a)
        self.lo, self.hi = lo, hi
        return np.clip(a, lo, hi)

    def backward(self, g):
        (a,) = self.saved_tensors
        mask = np.ones(a.shape, dtype=bool)
        if self.lo is not None:
            mask &= a >= self.lo
        if self.hi is not None:
            mask &= a <= self.hi
        return (g * mask,)


class Clone(Function):
    def forward(self, a):
        return a.copy()

    def backward(self, g):
        return (g,)


class Cast(Function):
    def forward(self, a, dtype):
        self.src = a.dtype
        return a.astype(dtype)

    def backward(self, g):
        return (g.astype(self.src) if self.src.kind == "f" else None,)


class MatMul(Function):
    """Matrix product of arrays with at least 2 dims (batch dims broadcast); see ``matmul``."""

    def forward(self, a, b):
        self.save_for_backward(a, b)
        return np.matmul(a, b)

    def backward(self, g):
        a, b = self.saved_tensors
        ga = np.matmul(g, np.swapaxes(b, -1, -2)) if self.needs_input_grad[0] else None
        gb = np.matmul(np.swapaxes(a, -1, -2), g) if self.needs_input_grad[1] else None
        return ga, gb


def matmul(a, b):
    """torch.matmul semantics, including 1-D operands and broadcast batch dims."""
    if a.ndim == 0 or b.ndim == 0:
        raise ShapeError(f"matmul: both operands need at least 1 dim, got {shape_str(a.shape)} @ {shape_str(b.shape)}")
    inner_a = a.shape[-1]
    inner_b = b.shape[-2] if b.ndim > 1 else b.shape[0]
    if inner_a != inner_b:
        raise ShapeError(
            f"matmul: the left operand's last dim must equal the right operand's "
            f"{'second-to-last' if b.ndim > 1 else 'only'} dim; got {shape_str(a.shape)} @ {shape_str(b.shape)} "
            f"({inner_a} != {inner_b})"
        )
    try:
        np.broadcast_shapes(a.shape[:-2], b.shape[:-2])
    except ValueError:
        raise ShapeError(
            f"matmul: batch dims {shape_str(a.shape[:-2])} and {shape_str(b.shape[:-2])} cannot be broadcast "
            f"together; got {shape_str(a.shape)} @ {shape_str(b.shape)}"
        ) from None
    squeeze_front = a.ndim == 1
    squeeze_back = b.ndim == 1
    if squeeze_front:
        a = a.unsqueeze(0)
    if squeeze_back:
        b = b.unsqueeze(-1)
    out = MatMul.apply(a, b)
    if squeeze_back:
        out = out.squeeze(-1)
    if squeeze_front:
        out = out.squeeze(-1 if squeeze_back else -2)
    return out
