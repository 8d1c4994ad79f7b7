"""excite's dtype names, dtype arguments, and torch's type-promotion rule for binary ops."""
import numpy as np

from .errors import InvalidArgumentError

float32 = np.dtype(np.float32)
float64 = np.dtype(np.float64)
float16 = np.dtype(np.float16)
int64 = np.dtype(np.int64)
int32 = np.dtype(np.int32)
uint8 = np.dtype(np.uint8)
bool_ = np.dtype(np.bool_)
default_float = float32


def as_dtype(dtype):
    if dtype is None:
        return None
    if dtype is bool:
        return bool_
    if dtype is float:
        return default_float
    if dtype is int:
        return int64
    try:
        return np.dtype(dtype)
    except TypeError as e:
        raise InvalidArgumentError(f"expected a dtype such as excite.float32, got {dtype!r}") from e


def _category(dtype):
    return {"b": 0, "i": 1, "u": 1, "f": 2}.get(dtype.kind, 3)


def result_dtype(a, b):
    """torch's type promotion: dimensioned tensors decide, unless a 0-d tensor or a Python number
    is of a higher category (bool < int < float); an int meeting a float takes the float's dtype."""
    dimensioned, zero_dim, numbers = [], [], []
    for v in (a, b):
        if hasattr(v, "data"):  # a Tensor
            (dimensioned if v.data.ndim else zero_dim).append(v.data.dtype)
        else:
            numbers.append(bool_ if isinstance(v, bool) else int64 if isinstance(v, int) else default_float)
    result = None
    for group in (dimensioned, zero_dim, numbers):
        if not group:
            continue
        if group is numbers:
            candidate = max(group, key=_category)
        else:
            candidate = group[0]
            for d in group[1:]:
                if _category(d) != _category(candidate):
                    candidate = candidate if _category(candidate) > _category(d) else d
                else:
                    candidate = np.promote_types(candidate, d)
        if result is None or _category(candidate) > _category(result):
            result = candidate
    return result
