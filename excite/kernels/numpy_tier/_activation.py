"""Activation codes (the integers the compiled kernels branch on) evaluated with NumPy."""
import numpy as np

from .. import activations
from ..activation import evaluate
from ..activations import OUTPUT_DERIVATIVE


def activate(z, kind):
    """act(z) for the activation with code ``kind`` (IDENTITY: z itself), as a new array of z's dtype."""
    if kind == activations.IDENTITY:
        return np.array(z, copy=True)
    record = _record(kind)
    return np.asarray(evaluate(record.forward, "x", z), dtype=z.dtype)


def activate_grad(v, kind):
    """d act / dz at the pre-activation ``v``, or at the output ``v`` for codes past OUTPUT_DERIVATIVE."""
    if kind == activations.IDENTITY:
        return np.ones_like(v)
    if kind >= OUTPUT_DERIVATIVE:
        record = _record(kind - OUTPUT_DERIVATIVE)
        return np.asarray(evaluate(record.derivative_of_output, "y", v), dtype=v.dtype)
    return np.asarray(evaluate(_record(kind).derivative, "x", v), dtype=v.dtype)


def _record(kind):
    for record in activations.records():
        if record.code == kind:
            return record
    raise ValueError(f"no activation has code {kind}")
