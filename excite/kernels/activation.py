"""Elementwise activations and their derivatives on plain arrays, by registry name (`activations`).

Large float32/float64 arrays of the built-in activations go through the compiled one-pass kernels
(`compiled.elementwise`): no temporaries, vectorised exp. Small arrays (the SE gate's [N, C, 1, 1],
logits), other dtypes and activations registered at run time evaluate the registry's formulas
with NumPy, where a call costs less than a parallel launch. Outputs keep the input's memory layout.
Softmax and log-softmax (not elementwise) are here too.
"""
import math

import numpy as np

from . import activations as registry
from . import buffers
from .layout import flat, like
from .threads import LazyModule, compiled_worthwhile

elementwise = LazyModule("elementwise")  # compiled kernels: numba loads on first use
activation_math = LazyModule("activation_math")

NS_PER_ELEMENT = 0.6  # single-thread cost estimate, to decide on threads (`threads.PARALLEL_MIN_NS`)


def _compiled(x, record):
    return record.builtin and compiled_worthwhile(x, "elementwise")


# ----- the formulas, evaluated with NumPy ------------------------------------------------------------------
def _numpy_sigmoid(v):
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-v))


def _numpy_clamp(v, lo, hi):
    v = np.where(v < lo, lo, v)  # std::max / std::min: NaN stays NaN
    return np.where(hi < v, hi, v)


def _numpy_exp(v):
    with np.errstate(over="ignore"):
        return np.exp(v)


_erf = np.vectorize(math.erf, otypes=[np.float64])
_NUMPY_FUNCTIONS = {"where": np.where, "clamp": _numpy_clamp, "exp": _numpy_exp, "log1p": np.log1p,
                    "tanh": np.tanh, "erf": lambda v: _erf(v).astype(np.result_type(v, np.float32), copy=False),
                    "sqrt": np.sqrt, "sigmoid": _numpy_sigmoid}
_CODE = {}  # formula text -> compiled code object


def evaluate(formula, variable, value):
    """The registry formula ``formula`` (an expression in ``variable``) on the array ``value``, in
    ``value``'s dtype and shape."""
    code = _CODE.get(formula)
    if code is None:
        code = _CODE[formula] = compile(formula, f"<activation formula {formula!r}>", "eval")
    result = eval(code, {"__builtins__": {}, **_NUMPY_FUNCTIONS}, {variable: value})  # noqa: S307  (registry formulas)
    out = np.empty_like(value)
    out[...] = result  # numbers and float64 constants come back in value's dtype
    return out


# ----- dispatch --------------------------------------------------------------------------------------------
def forward(x, name, out=None):
    """``act(x)`` for the activation ``name`` (None: identity); ``out`` (x's layout, may be x) receives it."""
    record = registry.get(name)
    if record is None:
        return x if out is None else _store(out, x)
    if _compiled(x, record):
        return _forward_compiled(x, record.code, out)
    return _store(out, evaluate(record.forward, "x", x))


def backward(grad, saved, name):
    """``grad * act'(.)`` from what backward saved: the output when the record has
    ``derivative_of_output`` (`Activation.saves_output`), else the input."""
    record = registry.get(name)
    if record is None:
        return grad
    if _compiled(saved, record):
        return _backward_compiled(grad, saved, activation_math.grad_code(record, record.saves_output))
    return derivative_times(grad, saved, record, at_output=record.saves_output)


def derivative_times(grad, saved, record, at_output=False):
    """``grad * act'`` with NumPy, at the input ``saved`` (or at the output when ``at_output``)."""
    if at_output:
        slope = evaluate(record.derivative_of_output, "y", saved)
    else:
        slope = evaluate(record.derivative, "x", saved)
    return (grad * slope).astype(grad.dtype, copy=False)


def _store(out, value):
    if out is None:
        return value
    out[...] = value
    return out


def _forward_compiled(x, code, out=None):
    if out is x and flat(x) is not None:
        elementwise.activation_inplace(flat(x), code, work_ns=x.size * NS_PER_ELEMENT)
        return out
    src = flat(x)
    if src is None:
        x = np.ascontiguousarray(x)
        src = x.reshape(-1)
    if out is None:
        out = buffers.empty_like(x)
    elementwise.activation_forward(src, flat(out), code, work_ns=x.size * NS_PER_ELEMENT)
    return out


def _backward_compiled(grad, saved, grad_code):
    src = flat(saved)
    if src is None:
        saved = np.ascontiguousarray(saved)
        src = saved.reshape(-1)
    grad = like(grad.astype(saved.dtype, copy=False), saved)
    out = buffers.empty_like(saved)
    elementwise.activation_backward(flat(grad), src, flat(out), grad_code, work_ns=grad.size * NS_PER_ELEMENT)
    return out


def compiled_code(name):
    """(code the compiled kernels apply, activation left for the caller to apply afterwards): an
    activation registered at run time is not compiled into the kernels' epilogues."""
    record = registry.get(name)
    if record is None:
        return registry.IDENTITY, None
    return (record.code, None) if record.builtin else (registry.IDENTITY, name)


# ----- softmax -----------------------------------------------------------------------------------------
def softmax(x, axis):
    e = np.exp(x - x.max(axis=axis, keepdims=True))
    return e / e.sum(axis=axis, keepdims=True)


def softmax_backward(grad, y, axis):
    return y * (grad - (grad * y).sum(axis=axis, keepdims=True))


def log_softmax(x, axis):
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def log_softmax_backward(grad, y, axis):
    return grad - np.exp(y) * grad.sum(axis=axis, keepdims=True)
