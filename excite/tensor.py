"""`Tensor`: a NumPy array plus the metadata reverse-mode autograd needs."""
import weakref
from typing import Optional, Sequence, Tuple, Union

import numpy as np

from .errors import ExciteError, InvalidArgumentError, ShapeError, shape_str

from .dtypes import (as_dtype, bool_, default_float, float16, float32, float64, int32, int64,  # noqa: F401
                     result_dtype, uint8)


class Tensor:
    """An n-dimensional array with gradient tracking.

    ``data`` is the NumPy array; ``grad`` accumulates d(loss)/d(self) after ``backward``;
    ``grad_fn`` is the Function that produced this tensor (None for leaves).
    """

    __slots__ = ("data", "requires_grad", "grad", "grad_fn", "__weakref__")
    __array_priority__ = 1000  # ndarray <op> Tensor defers to Tensor's reflected operator

    def __init__(self, data: np.ndarray, requires_grad: bool = False):
        self.data = data
        self.requires_grad = requires_grad
        self.grad = None
        self.grad_fn = None

    # ----- metadata ---------------------------------------------------------------------
    @property
    def shape(self) -> Tuple[int, ...]:
        return self.data.shape

    @property
    def dtype(self) -> np.dtype:
        return self.data.dtype

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def is_leaf(self) -> bool:
        return self.grad_fn is None

    @property
    def device(self):
        return "cpu"

    @property
    def T(self):
        return self.permute(*reversed(range(self.ndim)))

    def size(self, dim: Optional[int] = None):
        return self.data.shape if dim is None else self.data.shape[dim]

    def dim(self) -> int:
        return self.data.ndim

    def numel(self) -> int:
        return int(self.data.size)

    def __len__(self):
        if self.data.ndim == 0:
            raise TypeError("len() of a 0-d tensor")
        return self.data.shape[0]

    def is_floating_point(self):
        return self.data.dtype.kind == "f"

    # ----- conversion -------------------------------------------------------------------
    def numpy(self) -> np.ndarray:
        """The underlying array (shares memory)."""
        return self.data

    def __array__(self, dtype=None, copy=None):
        return self.data if dtype is None else self.data.astype(dtype)

    def item(self) -> Union[float, int, bool]:
        if self.data.size != 1:
            raise InvalidArgumentError(
                f"item() needs a tensor with one element, got shape {list(self.data.shape)}"
            )
        return self.data.reshape(()).item()

    def tolist(self):
        return self.data.tolist()

    def detach(self) -> "Tensor":
        return Tensor(self.data)

    def clone(self) -> "Tensor":
        return _fn.Clone.apply(self)

    def contiguous(self):
        return self

    def to(self, dtype=None, *args, **kwargs):
        if isinstance(dtype, str) and dtype == "cpu":
            dtype = kwargs.get("dtype")
        if dtype is None:
            return self
        dtype = as_dtype(dtype)
        if dtype == self.data.dtype:
            return self
        return _fn.Cast.apply(self, dtype=dtype)

    type = to

    def float(self):
        return self.to(float32)

    def double(self):
        return self.to(float64)

    def long(self):
        return self.to(int64)

    def int(self):
        return self.to(int32)

    def bool(self):
        return self.to(bool_)

    def cpu(self):
        return self

    # ----- autograd ---------------------------------------------------------------------
    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        if requires_grad and self.data.dtype.kind not in "fc":
            raise InvalidArgumentError(
                f"only floating-point tensors can require gradients, got dtype {self.data.dtype}"
            )
        if not self.is_leaf and not requires_grad:
            raise ExciteError("requires_grad can only be switched off on leaf tensors; use detach()")
        self.requires_grad = bool(requires_grad)
        return self

    def retain_grad(self):
        if self.grad_fn is not None:
            self.grad_fn.retained_output = weakref.ref(self)

    @property
    def _retains_grad(self):
        return self.grad_fn is not None and "retained_output" in self.grad_fn.__dict__

    def backward(self, gradient: Optional["Tensor"] = None, retain_graph: bool = False) -> None:
        from .autograd.engine import run_backward

        run_backward(self, gradient, retain_graph)

    # ----- in-place updates (no graph; for optimizers, init and buffers) ----------------
    def zero_(self):
        self.data[...] = 0
        return self

    def fill_(self, value):
        self.data[...] = value
        return self

    def copy_(self, src):
        self.data[...] = src.data if isinstance(src, Tensor) else np.asarray(src)
        return self

    def _inplace(self, other, op):
        other = other.data if isinstance(other, Tensor) else other
        op(self.data, other, out=self.data, casting="unsafe")
        return self

    def add_(self, other, alpha=1):
        if alpha != 1:
            other = (other.data if isinstance(other, Tensor) else other) * alpha
        return self._inplace(other, np.add)

    def sub_(self, other, alpha=1):
        return self.add_(other, alpha=-alpha)

    def mul_(self, other):
        return self._inplace(other, np.multiply)

    def div_(self, other):
        return self._inplace(other, np.divide)

    def clamp_(self, min=None, max=None):
        np.clip(self.data, min, max, out=self.data)
        return self

    def uniform_(self, a=0.0, b=1.0):
        from .random import generator

        self.data[...] = generator().uniform(a, b, self.data.shape)
        return self

    def normal_(self, mean=0.0, std=1.0):
        from .random import generator

        self.data[...] = generator().normal(mean, std, self.data.shape)
        return self

    def __setitem__(self, index, value):
        if self.requires_grad and self.is_leaf:
            from .autograd.grad_mode import is_grad_enabled

            if is_grad_enabled():
                raise ExciteError(
                    "a leaf tensor that requires grad cannot be modified in place; "
                    "wrap the update in excite.no_grad()"
                )
        index = index.data if isinstance(index, Tensor) else index
        self.data[index] = value.data if isinstance(value, Tensor) else value

    # ----- operators --------------------------------------------------------------------
    def __add__(self, other):
        return _fn.Add.apply(*_promoted(self, _operand(other, self)))

    def __radd__(self, other):
        return _fn.Add.apply(*_promoted(_operand(other, self), self))

    def __sub__(self, other):
        return _fn.Sub.apply(*_promoted(self, _operand(other, self)))

    def __rsub__(self, other):
        return _fn.Sub.apply(*_promoted(_operand(other, self), self))

    def __mul__(self, other):
        return _fn.Mul.apply(*_promoted(self, _operand(other, self)))

    def __rmul__(self, other):
        return _fn.Mul.apply(*_promoted(_operand(other, self), self))

    def __truediv__(self, other):
        return _fn.Div.apply(*_promoted(self, _operand(other, self), true_divide=True))

    def __rtruediv__(self, other):
        return _fn.Div.apply(*_promoted(_operand(other, self), self, true_divide=True))

    def __neg__(self):
        return _fn.Neg.apply(self)

    def __pos__(self):
        return self

    def __pow__(self, exponent):
        if isinstance(exponent, Tensor):
            raise InvalidArgumentError("pow supports a scalar exponent only, got a Tensor")
        if isinstance(exponent, np.generic):
            exponent = exponent.item()
        if not isinstance(exponent, (int, float)):
            raise InvalidArgumentError(f"pow: expected a scalar exponent, got {type(exponent).__name__}")
        base = self
        if isinstance(exponent, float) and base.data.dtype.kind != "f":
            base = base.to(default_float)
        return _fn.Pow.apply(base, exponent=exponent)

    def __rpow__(self, base):
        if isinstance(base, np.generic):
            base = base.item()
        if not isinstance(base, (int, float)) or base <= 0:
            raise InvalidArgumentError(f"number ** tensor needs a positive number as base, got {base!r}")
        return _fn.Exp.apply(_floating(self) * float(np.log(base)))

    def __matmul__(self, other):
        return _fn.matmul(*_promoted(self, _matmul_operand(other)))

    def __rmatmul__(self, other):
        return _fn.matmul(*_promoted(_matmul_operand(other), self))

    def __getitem__(self, index):
        return _fn.index(self, index)

    # comparisons give bool tensors without a graph
    def _compare(self, other, op):
        if not isinstance(other, (Tensor, np.ndarray, np.generic, int, float, list, tuple)):
            return NotImplemented  # t == None is False and t < "a" a TypeError, as in torch
        other = other.data if isinstance(other, Tensor) else other
        try:
            return Tensor(op(self.data, other))
        except ValueError:
            raise ShapeError(
                f"comparison: shapes {shape_str(self.data.shape)} and {shape_str(np.shape(other))} "
                "cannot be broadcast together"
            ) from None

    def __eq__(self, other):
        return self._compare(other, np.equal)

    def __ne__(self, other):
        return self._compare(other, np.not_equal)

    def __lt__(self, other):
        return self._compare(other, np.less)

    def __le__(self, other):
        return self._compare(other, np.less_equal)

    def __gt__(self, other):
        return self._compare(other, np.greater)

    def __ge__(self, other):
        return self._compare(other, np.greater_equal)

    __hash__ = object.__hash__

    def __bool__(self):
        if self.data.size != 1:
            raise InvalidArgumentError(
                f"the truth value of a tensor with {self.data.size} elements is ambiguous"
            )
        return bool(self.data)

    def __float__(self):
        return float(self.item())

    def __int__(self):
        return int(self.item())

    def __index__(self):
        if self.data.dtype.kind not in "iu" or self.data.size != 1:
            raise TypeError("only integer tensors of a single element can be converted to an index")
        return int(self.item())

    def __iter__(self):
        if self.data.ndim == 0:
            raise TypeError("iteration over a 0-d tensor")
        return (self[i] for i in range(self.data.shape[0]))

    def __repr__(self):
        body = np.array2string(self.data, separator=", ", prefix="tensor(", threshold=1000, edgeitems=3,
                               formatter=_float_formatter(self.data))
        extras = []
        if self.data.dtype not in (float32, int64, bool_):
            extras.append(f"dtype=excite.{self.data.dtype}")
        if self.grad_fn is not None:
            extras.append(f"grad_fn=<{self.grad_fn.name()}>")
        elif self.requires_grad:
            extras.append("requires_grad=True")
        return "tensor(" + body + "".join(", " + e for e in extras) + ")"

    # ----- methods that mirror functions ------------------------------------------------
    def sum(self, dim: Optional[Union[int, Sequence[int]]] = None, keepdim: bool = False) -> "Tensor":
        return _fn.Sum.apply(self, dim=dim, keepdim=keepdim)

    def mean(self, dim=None, keepdim=False) -> "Tensor":
        if self.data.dtype.kind != "f":
            raise InvalidArgumentError(
                f"mean(): expected a floating-point tensor, got dtype {self.data.dtype}; convert with .float()"
            )
        return _fn.Mean.apply(self, dim=dim, keepdim=keepdim)

    def amax(self, dim=None, keepdim=False):
        return _fn.Amax.apply(self, dim=dim, keepdim=keepdim)

    def max(self, dim=None, keepdim=False):
        """Without ``dim`` the largest value; with it ``(values, indices)``, the gradient going to
        the selected index (torch's rule), unlike amax which shares it between ties."""
        if dim is None:
            return self.amax()
        indices = self.argmax(dim, keepdim=True)
        axis = _fn.normalize_dims(dim, self.ndim, "max")[0] if self.ndim else 0
        grid = list(np.indices(indices.shape, sparse=True))
        if self.ndim:
            grid[axis] = indices.data
        values = self[tuple(grid)] if self.ndim else self.clone()
        if not keepdim and self.ndim:
            values, indices = values.squeeze(axis), indices.squeeze(axis)
        return values, indices

    def argmax(self, dim=None, keepdim=False):
        if dim is None:
            return Tensor(np.asarray(np.argmax(self.data), dtype=np.int64))
        return Tensor(np.argmax(self.data, axis=dim, keepdims=keepdim).astype(np.int64))

    def var(self, dim=None, unbiased=True, keepdim=False):
        n = self.data.size if dim is None else np.prod([self.data.shape[d] for d in _dims(dim)])
        mu = self.mean(dim, keepdim=True)
        return ((self - mu) ** 2).sum(dim, keepdim=keepdim) / (n - 1 if unbiased else n)

    def reshape(self, *shape) -> "Tensor":
        return _fn.reshape(self, _shape_args(shape))

    def view(self, *shape) -> "Tensor":
        return _fn.reshape(self, _shape_args(shape))

    def view_as(self, other):
        return _fn.reshape(self, other.shape)

    def expand(self, *shape):
        return _fn.expand(self, _shape_args(shape))

    def flatten(self, start_dim=0, end_dim=-1) -> "Tensor":
        return _fn.flatten(self, start_dim, end_dim)

    def permute(self, *dims) -> "Tensor":
        return _fn.permute(self, _shape_args(dims))

    def transpose(self, dim0, dim1) -> "Tensor":
        return _fn.transpose(self, dim0, dim1)

    def t(self):
        return _fn.transpose(self, 0, 1)

    def squeeze(self, dim=None) -> "Tensor":
        return _fn.squeeze(self, dim)

    def unsqueeze(self, dim) -> "Tensor":
        return _fn.unsqueeze(self, dim)

    def exp(self) -> "Tensor":
        return _fn.Exp.apply(_floating(self))

    def log(self) -> "Tensor":
        return _fn.Log.apply(_floating(self))

    def sqrt(self) -> "Tensor":
        return _fn.Sqrt.apply(_floating(self))

    def abs(self) -> "Tensor":
        return _fn.Abs.apply(self)

    def neg(self):
        return _fn.Neg.apply(self)

    def pow(self, exponent):
        return self ** exponent

    def add(self, other, alpha=1):
        return self + (other * alpha if alpha != 1 else other)

    def sub(self, other, alpha=1):
        return self - (other * alpha if alpha != 1 else other)

    def mul(self, other):
        return self * other

    def div(self, other):
        return self / other

    def matmul(self, other) -> "Tensor":
        return self @ other

    def relu(self) -> "Tensor":
        return _fn.Activation.apply(self, "relu")

    def sigmoid(self) -> "Tensor":
        return _fn.Activation.apply(_floating(self), "sigmoid")

    def tanh(self) -> "Tensor":
        return _fn.Activation.apply(_floating(self), "tanh")

    def softmax(self, dim) -> "Tensor":
        return _fn.Softmax.apply(self, dim=dim)

    def log_softmax(self, dim) -> "Tensor":
        return _fn.LogSoftmax.apply(self, dim=dim)

    def clamp(self, min=None, max=None):
        return _fn.Clamp.apply(self, lo=min, hi=max)


def _float_formatter(array):
    """torch's float printing (torch/_tensor_str.py _Formatter): '1.' when every value is whole,
    else 4 decimals, scientific for wide ranges; the width comes from the nonzero finite values."""
    if array.dtype.kind != "f":
        return None
    if array.size > 1000:  # printed summarized, so format from the values that are shown (as torch)
        for axis in range(array.ndim):
            if array.shape[axis] > 6:
                array = np.concatenate([array.take(range(3), axis), array.take(range(-3, 0), axis)], axis)
    values = array.reshape(-1).astype(np.float64)
    nonzero = values[np.isfinite(values) & (values != 0)]
    whole, sci, width = True, False, 1
    if nonzero.size:
        magnitudes = np.abs(nonzero)
        whole = bool(np.all(np.ceil(nonzero) == nonzero))
        sci = magnitudes.max() / magnitudes.min() > 1000.0 or magnitudes.max() > 1e8 or magnitudes.min() < 1e-4
        if sci:
            width = max(len(f"{v:.4e}") for v in nonzero)
        elif whole:
            width = max(len(f"{v:.0f}") + 1 for v in nonzero)
        else:
            width = max(len(f"{v:.4f}") for v in nonzero)

    def text(v):
        if sci:
            out = f"{v:{width}.4e}"
        elif whole:
            out = f"{v:.0f}" + ("" if np.isinf(v) or np.isnan(v) else ".")
        else:
            out = f"{v:.4f}"
        return out.rjust(width)

    return {"float_kind": text}


def _dims(dim):
    return dim if isinstance(dim, (tuple, list)) else (dim,)


def _shape_args(shape):
    if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
        return tuple(shape[0])
    return tuple(shape)


def _operand(value, like):
    """Python scalars stay scalars (they do not widen a tensor's dtype); arrays become tensors."""
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.generic) and value.dtype.kind in "biuf":
        return value.item()  # NumPy scalars count as Python numbers, as in torch (np.float64 is a float)
    if isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, np.ndarray):
        return Tensor(value)
    try:
        return Tensor(np.asarray(value, dtype=like.data.dtype))
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(
            f"expected a Tensor, array or number as operand, got {type(value).__name__}"
        ) from e


def _matmul_operand(value):
    if isinstance(value, Tensor):
        return value
    if isinstance(value, np.ndarray):
        return Tensor(value)
    raise InvalidArgumentError(f"matmul: expected a Tensor or array operand, got {type(value).__name__}")


def _floating(t):
    """Integer and bool tensors become float32 before a floating-point op (torch's rule)."""
    return t if t.data.dtype.kind == "f" else t.to(default_float)


def _promoted(a, b, true_divide=False):
    """Cast the tensor operands of a binary op to the dtype torch would compute in."""
    da = a.data.dtype if isinstance(a, Tensor) else None
    db = b.data.dtype if isinstance(b, Tensor) else None
    # fast path: two tensors of one floating dtype, or a float tensor and a Python number
    if (da is None or da.kind == "f") and (db is None or db.kind == "f") and (da is None or db is None or da == db):
        return a, b
    target = result_dtype(a, b)
    if true_divide and target.kind != "f":
        target = default_float
    if isinstance(a, Tensor) and a.data.dtype != target:
        a = a.to(target)
    if isinstance(b, Tensor) and b.data.dtype != target:
        b = b.to(target)
    return a, b


from .autograd import functions as _fn  # noqa: E402  (circular import by design)
