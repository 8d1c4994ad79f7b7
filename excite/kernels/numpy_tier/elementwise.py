"""NumPy twins of `compiled.elementwise`: activations forward and backward over flat arrays."""
import numpy as np

from ._activation import activate, activate_grad
from ..activations import IDENTITY

_QUIET = np.errstate(all="ignore")  # like the kernels: no floating-point warnings (inf, NaN in user data)


@_QUIET
def activation_forward(x, out, kind):
    """out[i] = act(x[i]) over flat arrays that do not overlap."""
    out[...] = activate(x, kind)


@_QUIET
def activation_inplace(x, kind):
    """x[i] = act(x[i]) over a flat array."""
    if kind != IDENTITY:
        x[...] = activate(x, kind)


@_QUIET
def activation_backward(grad, saved, out, kind):
    """out[i] = grad[i] * act'(saved[i]) (``saved`` the output for the grad codes past OUTPUT_DERIVATIVE)."""
    np.multiply(grad, activate_grad(saved, kind), out=out)


@_QUIET
def epilogue_rows(rows, scale, shift, kind):
    """rows[r] = act(rows[r] * scale + shift) (an empty ``scale`` means act alone), in place."""
    if scale.size:
        rows *= scale
        rows += shift
    if kind != IDENTITY:
        rows[...] = activate(rows, kind)
