"""Compiled one-pass elementwise kernels: activations forward and backward, alone or after an affine map.

The ``*_activation`` helpers branch once on the activation code (`activation_math.by_kind`) and run a
loop in which the code is a constant (numba inlines the helpers), so every loop vectorises; kernels
elsewhere (batch norm, depthwise conv, the matrix products' epilogue) reuse them on rows of their output.
"""
from numba import prange

from .activation_math import GRAD_KINDS, activate, activate_grad, by_kind
from ..threads import helper, inline_helper, kernel

BLOCK = 1 << 14  # elements per parallel task


@inline_helper
def _map(src, dst, kind):
    for i in range(src.shape[0]):
        dst[i] = activate(src[i], kind)


map_activation = by_kind(_map)
map_activation.__doc__ = """dst[i] = act(src[i]); dst may be src."""


@inline_helper
def _affine_map(src, scale, shift, dst, kind):
    for i in range(src.shape[0]):
        dst[i] = activate(src[i] * scale[i] + shift[i], kind)


affine_activation = by_kind(_affine_map)
affine_activation.__doc__ = """dst[i] = act(src[i] * scale[i] + shift[i]) (batch norm's affine map, then the activation)."""


@inline_helper
def _affine_map_inplace(buf, scale, shift, kind):
    # reading and writing one array: a separate dst that aliases it would fail the compiler's
    # runtime overlap check and fall back to scalar code
    for i in range(buf.shape[0]):
        buf[i] = activate(buf[i] * scale[i] + shift[i], kind)


affine_activation_inplace = by_kind(_affine_map_inplace)
affine_activation_inplace.__doc__ = """buf[i] = act(buf[i] * scale[i] + shift[i])."""


@inline_helper
def _map_inplace(buf, kind):
    for i in range(buf.shape[0]):
        buf[i] = activate(buf[i], kind)


map_activation_inplace = by_kind(_map_inplace)
map_activation_inplace.__doc__ = """buf[i] = act(buf[i])."""


@inline_helper
def _map_grad(grad, saved, dst, kind):
    for i in range(grad.shape[0]):
        dst[i] = grad[i] * activate_grad(saved[i], kind)


map_activation_grad = by_kind(_map_grad, GRAD_KINDS)
map_activation_grad.__doc__ = """dst[i] = grad[i] * act'(saved[i]); ``saved`` is the input (the output for
the grad codes of `activation_math.grad_code(record, at_output=True)`)."""


@inline_helper
def _affine_block(rows, r0, r1, c0, c1, scale, shift, kind):
    sc = scale[c0:c1]
    sh = shift[c0:c1]
    for r in range(r0, r1):
        row = rows[r, c0:c1]
        # indices from 0: numba drops its negative-index wraparound, which would block vectorising
        for c in range(row.shape[0]):
            row[c] = activate(row[c] * sc[c] + sh[c], kind)


@inline_helper
def _block(rows, r0, r1, c0, c1, kind):
    for r in range(r0, r1):
        row = rows[r, c0:c1]
        for c in range(row.shape[0]):
            row[c] = activate(row[c], kind)


activation_block = by_kind(_block)
activation_block.__doc__ = """rows[r, c] = act(rows[r, c]) for r0 <= r < r1, c0 <= c < c1 of a C-contiguous 2-D ``rows``, in place."""


affine_activation_block = by_kind(_affine_block)
affine_activation_block.__doc__ = """rows[r, c] = act(rows[r, c] * scale[c] + shift[c]) for r0 <= r < r1, c0 <= c < c1 of a
C-contiguous 2-D ``rows``, in place; one branch on the code for the whole block (short rows would
otherwise pay it per row)."""


@inline_helper
def affine_activation_rows(rows, scale, shift, kind):
    """rows[r] = act(rows[r] * scale + shift) for a C-contiguous 2-D ``rows``, in place."""
    affine_activation_block(rows, 0, rows.shape[0], 0, rows.shape[1], scale, shift, kind)


@helper
def epilogue_rows(rows, scale, shift, kind):
    """rows[r] = act(rows[r] * scale + shift) (an empty ``scale`` means act alone), in place; serial."""
    if scale.size:
        affine_activation_rows(rows, scale, shift, kind)
    else:
        for r in range(rows.shape[0]):
            map_activation_inplace(rows[r], kind)


@kernel
def activation_forward(x, out, kind):
    """out[i] = act(x[i]) over flat arrays that do not overlap (see `activation_inplace`)."""
    n = x.shape[0]
    for b in prange((n + BLOCK - 1) // BLOCK):
        lo = b * BLOCK
        hi = min(n, lo + BLOCK)
        map_activation(x[lo:hi], out[lo:hi], kind)


@kernel
def activation_inplace(x, kind):
    """x[i] = act(x[i]) over a flat array."""
    n = x.shape[0]
    for b in prange((n + BLOCK - 1) // BLOCK):
        lo = b * BLOCK
        map_activation_inplace(x[lo:min(n, lo + BLOCK)], kind)


@kernel
def activation_backward(grad, saved, out, kind):
    """out[i] = grad[i] * act'(saved[i]) over flat arrays."""
    n = grad.shape[0]
    for b in prange((n + BLOCK - 1) // BLOCK):
        lo = b * BLOCK
        hi = min(n, lo + BLOCK)
        map_activation_grad(grad[lo:hi], saved[lo:hi], out[lo:hi], kind)
