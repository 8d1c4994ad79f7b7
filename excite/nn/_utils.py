"""Argument helpers shared by the layers, the functional API and the exporters."""
import numpy as np

from ..errors import InvalidArgumentError


def pair(value):
    """torch's ``_pair``: a tuple or list becomes a tuple, a scalar is repeated."""
    if isinstance(value, (tuple, list)):
        return tuple(value)
    return (value, value)


def int_pair(value, name, op):
    """``(a, b)`` of Python ints from an int or a pair of ints, else InvalidArgumentError naming ``op``'s ``name``."""
    if isinstance(value, (int, np.integer)):
        return (int(value), int(value))
    if isinstance(value, (tuple, list)) and len(value) == 2 and all(isinstance(i, (int, np.integer)) for i in value):
        return (int(value[0]), int(value[1]))
    raise InvalidArgumentError(f"{op}: {name} must be an int or a pair of ints, got {value!r}")
