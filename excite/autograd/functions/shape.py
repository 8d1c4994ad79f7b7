"""Differentiable shape ops: reshape, expand, permute, squeeze/unsqueeze, cat, indexing."""
import numpy as np

from ...errors import InvalidArgumentError, ShapeError, shape_str
from ..function import Function


class Reshape(Function):
    def forward(self, a, shape):
        self.src = a.shape
        try:
            return a.reshape(shape)
        except ValueError:
            raise ShapeError(
                f"reshape: shape {list(shape)} is invalid for a tensor of shape {shape_str(a.shape)} "
                f"({a.size} elements)"
            ) from None

    def backward(self, g):
        return (g.reshape(self.src),)


class Flatten(Reshape):
    """`Reshape` as ``flatten`` produces it (graph captures name it after torch's function)."""


class Expand(Function):
    def forward(self, a, shape):
        self.src = a.shape
        lead = len(shape) - a.ndim
        target = tuple(a.shape[i - lead] if s == -1 else s for i, s in enumerate(shape))
        try:
            return np.broadcast_to(a, target)
        except ValueError:
            raise ShapeError(f"expand: cannot expand {shape_str(a.shape)} to {list(shape)}") from None

    def backward(self, g):
        return (g,)  # the engine sums broadcast axes back to the input's shape


class Permute(Function):
    def forward(self, a, dims):
        in_range = all(-a.ndim <= d < a.ndim for d in dims)
        if not in_range or sorted(d % a.ndim for d in dims) != list(range(a.ndim)):
            raise InvalidArgumentError(
                f"permute: dims {list(dims)} are not a permutation of the {a.ndim} dims of a tensor of shape "
                f"{shape_str(a.shape)}"
            )
        self.dims = tuple(d % a.ndim for d in dims)
        return np.transpose(a, self.dims)

    def backward(self, g):
        return (np.transpose(g, np.argsort(self.dims)),)


class Index(Function):
    def forward(self, a, index):
        self.src_shape, self.dtype, self.index = a.shape, a.dtype, index
        try:
            return a[index]
        except IndexError as e:
            raise InvalidArgumentError(f"index {index!r} is invalid for a tensor of shape {shape_str(a.shape)}: {e}") from None

    def backward(self, g):
        out = np.zeros(self.src_shape, dtype=g.dtype)
        if _is_basic(self.index):
            out[self.index] = g  # basic indexing selects each element at most once
        else:
            np.add.at(out, self.index, g)  # advanced indices may repeat: accumulate
        return (out,)


def _is_basic(index):
    parts = index if isinstance(index, tuple) else (index,)
    return all(p is None or p is Ellipsis or isinstance(p, (slice, int, np.integer)) and not isinstance(p, bool)
               for p in parts)


class Cat(Function):
    def forward(self, *arrays, dim=0):
        self.sizes = [a.shape[dim] for a in arrays]
        self.dim = dim
        return np.concatenate(arrays, axis=dim)

    def backward(self, g):
        splits = np.cumsum(self.sizes)[:-1]
        return tuple(np.split(g, splits, axis=self.dim))


def _dim(d, ndim, op):
    if not -ndim <= d < ndim:
        raise InvalidArgumentError(f"{op}: dim {d} is out of range for a tensor with {ndim} dims")
    return d % ndim


def reshape(t, shape):
    return Reshape.apply(t, shape=tuple(int(s) for s in shape))


def expand(t, shape):
    return Expand.apply(t, shape=tuple(shape))


def permute(t, dims):
    if len(dims) != t.ndim:
        raise InvalidArgumentError(f"permute: expected {t.ndim} dims, got {list(dims)}")
    return Permute.apply(t, dims=tuple(dims))


def transpose(t, dim0, dim1):
    dims = list(range(t.ndim))
    a, b = _dim(dim0, t.ndim, "transpose"), _dim(dim1, t.ndim, "transpose")
    dims[a], dims[b] = dims[b], dims[a]
    return Permute.apply(t, dims=tuple(dims))


def flatten(t, start_dim=0, end_dim=-1):
    if t.ndim == 0:
        return reshape(t, (1,))
    s, e = _dim(start_dim, t.ndim, "flatten"), _dim(end_dim, t.ndim, "flatten")
    if s > e:
        raise InvalidArgumentError(f"flatten: start_dim {start_dim} comes after end_dim {end_dim}")
    shape = t.shape[:s] + (int(np.prod(t.shape[s:e + 1])),) + t.shape[e + 1:]
    return Flatten.apply(t, shape=tuple(int(v) for v in shape))


def squeeze(t, dim=None):
    if dim is None:
        shape = tuple(s for s in t.shape if s != 1)
    else:
        dims = {_dim(d, max(t.ndim, 1), "squeeze") for d in (dim if isinstance(dim, (tuple, list)) else (dim,))}
        shape = tuple(s for i, s in enumerate(t.shape) if not (i in dims and s == 1))
    return reshape(t, shape)


def unsqueeze(t, dim):
    d = _dim(dim, t.ndim + 1, "unsqueeze")
    return reshape(t, t.shape[:d] + (1,) + t.shape[d:])


def cat(tensors, dim=0):
    from ...tensor import Tensor

    tensors = list(tensors)
    if not tensors:
        raise InvalidArgumentError("cat: expected a non-empty list of tensors")
    tensors = [t if isinstance(t, Tensor) else Tensor(np.asarray(t)) for t in tensors]
    ndim = tensors[0].ndim
    d = _dim(dim, ndim, "cat")
    ref = tensors[0].shape
    for t in tensors[1:]:
        if t.ndim != ndim or any(a != b for i, (a, b) in enumerate(zip(ref, t.shape)) if i != d):
            raise ShapeError(
                f"cat: tensors must match in every dim but {d}; got {shape_str(ref)} and {shape_str(t.shape)}"
            )
    return Cat.apply(*tensors, dim=d)


def stack(tensors, dim=0):
    tensors = list(tensors)
    if not tensors:
        raise InvalidArgumentError("stack: expected a non-empty list of tensors")
    return cat([unsqueeze(t, dim) for t in tensors], dim)


def index(t, idx):
    from ...tensor import Tensor

    if isinstance(idx, Tensor):
        idx = idx.data
    elif isinstance(idx, tuple):
        idx = tuple(i.data if isinstance(i, Tensor) else i for i in idx)
    elif isinstance(idx, list):
        idx = np.asarray(idx)
    return Index.apply(t, index=idx)
