"""Differentiable reductions: sum, mean, amax over any dims, with keepdim."""
import numpy as np

from ...errors import InvalidArgumentError
from ..function import Function


def normalize_dims(dim, ndim, op):
    """Non-negative axes for ``dim`` (an int, a sequence, or None / () meaning every dim, as in torch).

    A 0-d tensor accepts dim 0 and -1, as in torch, and has no axes to reduce.
    """
    if dim is None or (isinstance(dim, (tuple, list)) and len(dim) == 0):
        return tuple(range(ndim))
    dims = dim if isinstance(dim, (tuple, list)) else (dim,)
    bound = max(ndim, 1)
    out = []
    for d in dims:
        if not isinstance(d, (int, np.integer)) or isinstance(d, bool):
            raise InvalidArgumentError(f"{op}: dim must be an int or a tuple of ints, got {dim!r}")
        if not -bound <= d < bound:
            raise InvalidArgumentError(
                f"{op}: dim {d} is out of range for a tensor with {ndim} dims (expected {-bound}..{bound - 1})"
            )
        axis = int(d) % bound
        if axis in out:
            raise InvalidArgumentError(f"{op}: dim {axis} appears more than once in {list(dims)}")
        out.append(axis)
    return tuple(out) if ndim else ()


def _expand_back(g, shape, axes, keepdim):
    if not keepdim and axes:
        g = np.expand_dims(g, axes)
    return np.broadcast_to(g, shape)


class Sum(Function):
    def forward(self, a, dim=None, keepdim=False):
        self.axes = normalize_dims(dim, a.ndim, "sum")
        self.shape, self.keepdim = a.shape, keepdim
        return np.sum(a, axis=self.axes, keepdims=keepdim)

    def backward(self, g):
        return (_expand_back(g, self.shape, self.axes, self.keepdim),)


class Mean(Function):
    def forward(self, a, dim=None, keepdim=False):
        self.axes = normalize_dims(dim, a.ndim, "mean")
        self.shape, self.keepdim = a.shape, keepdim
        self.count = int(np.prod([a.shape[d] for d in self.axes])) if self.axes else 1
        return np.mean(a, axis=self.axes, keepdims=keepdim)

    def backward(self, g):
        return (_expand_back(g / self.count, self.shape, self.axes, self.keepdim),)


class Amax(Function):
    """Max over dims; the gradient is split evenly between tied maxima (as torch.amax)."""

    def forward(self, a, dim=None, keepdim=False):
        self.axes = normalize_dims(dim, a.ndim, "amax")
        self.keepdim = keepdim
        if any(a.shape[d] == 0 for d in self.axes):
            raise InvalidArgumentError(
                f"amax: cannot reduce over a dim of size 0 (input shape {list(a.shape)}, dims {list(self.axes)})"
            )
        out = np.max(a, axis=self.axes, keepdims=True)
        self.save_for_backward(a, out)
        return out if keepdim else np.squeeze(out, axis=self.axes)

    def backward(self, g):
        a, out = self.saved_tensors
        mask = a == out
        count = mask.sum(axis=self.axes, keepdims=True)
        if not self.keepdim and self.axes:
            g = np.expand_dims(g, self.axes)
        return (mask * (g / count),)
