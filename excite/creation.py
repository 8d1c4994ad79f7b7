"""Functions that make tensors: tensor, from_numpy, zeros, ones, rand, arange, *_like."""
import numpy as np

from .errors import InvalidArgumentError
from .random import generator
from .tensor import Tensor, as_dtype, default_float


def _shape(size):
    if len(size) == 1 and isinstance(size[0], (tuple, list)):
        size = tuple(size[0])
    for s in size:
        if not isinstance(s, (int, np.integer)) or s < 0:
            raise InvalidArgumentError(f"expected a shape of non-negative ints, got {list(size)}")
    return tuple(int(s) for s in size)


def _finish(array, requires_grad):
    t = Tensor(array)
    if requires_grad:
        t.requires_grad_(True)
    return t


def tensor(data, dtype=None, requires_grad=False):
    """Copy ``data`` (nested lists, numbers, arrays or a Tensor) into a new leaf tensor.

    Python floats become float32 and Python ints int64, as in torch.
    """
    if isinstance(data, Tensor):
        data = data.data
    dtype = as_dtype(dtype)
    try:
        arr = np.array(data, dtype=dtype)
    except (TypeError, ValueError) as e:
        raise InvalidArgumentError(f"tensor(): cannot make a tensor from this {type(data).__name__}: {e}") from None
    if dtype is None:
        from_numpy_types = isinstance(data, (np.ndarray, np.generic))  # these keep their dtype, as in torch
        if arr.dtype == np.float64 and not from_numpy_types:
            arr = arr.astype(default_float)
        elif arr.dtype.kind in "iu" and not from_numpy_types:
            arr = arr.astype(np.int64)
        elif arr.dtype.kind not in "fiub":
            raise InvalidArgumentError(f"tensor(): cannot make a tensor from {type(data).__name__} data")
    return _finish(arr, requires_grad)


def from_numpy(array):
    """A tensor that shares memory with ``array``."""
    if not isinstance(array, np.ndarray):
        raise InvalidArgumentError(f"from_numpy expects an np.ndarray, got {type(array).__name__}")
    return Tensor(array)


def as_tensor(data, dtype=None):
    if isinstance(data, Tensor) and (dtype is None or as_dtype(dtype) == data.dtype):
        return data
    if isinstance(data, np.ndarray) and (dtype is None or as_dtype(dtype) == data.dtype):
        return Tensor(data)
    return tensor(data, dtype=dtype)


def _dt(dtype):
    return as_dtype(dtype) or default_float


def zeros(*size, dtype=None, requires_grad=False):
    return _finish(np.zeros(_shape(size), dtype=_dt(dtype)), requires_grad)


def ones(*size, dtype=None, requires_grad=False):
    return _finish(np.ones(_shape(size), dtype=_dt(dtype)), requires_grad)


def empty(*size, dtype=None, requires_grad=False):
    return _finish(np.empty(_shape(size), dtype=_dt(dtype)), requires_grad)


def full(size, fill_value, dtype=None, requires_grad=False):
    if dtype is None and isinstance(fill_value, bool):
        dtype = bool
    elif dtype is None and isinstance(fill_value, int):
        dtype = np.int64
    return _finish(np.full(_shape((size,)), fill_value, dtype=_dt(dtype)), requires_grad)


def rand(*size, dtype=None, requires_grad=False):
    return _finish(generator().random(_shape(size)).astype(_dt(dtype)), requires_grad)


def randn(*size, dtype=None, requires_grad=False):
    return _finish(generator().standard_normal(_shape(size)).astype(_dt(dtype)), requires_grad)


def randint(low, high=None, size=(), dtype=None):
    if high is None:
        low, high = 0, low
    return Tensor(generator().integers(low, high, _shape((size,))).astype(as_dtype(dtype) or np.int64))


def randperm(n):
    return Tensor(generator().permutation(int(n)).astype(np.int64))


def arange(start, end=None, step=1, dtype=None, requires_grad=False):
    if end is None:
        start, end = 0, start
    if dtype is None:
        ints = all(isinstance(v, (int, np.integer)) for v in (start, end, step))
        dtype = np.int64 if ints else default_float
    return _finish(np.arange(start, end, step).astype(as_dtype(dtype)), requires_grad)


def _like(t, dtype):
    return t.shape, (as_dtype(dtype) or t.dtype)


def _template(t, shape):
    """``t``'s array, so the result keeps its memory layout (torch's preserve_format), e.g. channels-last."""
    data = getattr(t, "data", t)
    return data if isinstance(data, np.ndarray) else np.empty(shape, dtype=np.int8)


def zeros_like(t, dtype=None, requires_grad=False):
    shape, dt = _like(t, dtype)
    return _finish(np.zeros_like(_template(t, shape), dtype=dt), requires_grad)


def ones_like(t, dtype=None, requires_grad=False):
    shape, dt = _like(t, dtype)
    return _finish(np.ones_like(_template(t, shape), dtype=dt), requires_grad)


def empty_like(t, dtype=None, requires_grad=False):
    shape, dt = _like(t, dtype)
    return _finish(np.empty_like(_template(t, shape), dtype=dt), requires_grad)


def full_like(t, fill_value, dtype=None, requires_grad=False):
    shape, dt = _like(t, dtype)
    return _finish(np.full_like(_template(t, shape), fill_value, dtype=dt), requires_grad)


def rand_like(t, dtype=None, requires_grad=False):
    shape, dt = _like(t, dtype)
    return _finish(generator().random(shape).astype(dt), requires_grad)


def randn_like(t, dtype=None, requires_grad=False):
    shape, dt = _like(t, dtype)
    return _finish(generator().standard_normal(shape).astype(dt), requires_grad)
