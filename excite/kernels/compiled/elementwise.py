"""Compiled one-pass elementwise kernels: activations forward and backward, alone or after an affine map.

The ``*_activation`` helpers branch once on the activation kind and run a loop in which the
kind is a constant (numba inlines the helpers), so every loop vectorises; kernels elsewhere
(batch norm, depthwise conv) reuse them on rows of their output.
"""
from numba import prange

from .scalar_math import (HARDSIGMOID, HARDSWISH, IDENTITY, RELU, RELU6, SIGMOID, SIGMOID_OF_OUTPUT, SILU,
                          activate, activate_grad)
from ..threads import helper, inline_helper, kernel

BLOCK = 1 << 14  # elements per parallel task


@inline_helper
def _map(src, dst, kind):
    for i in range(src.shape[0]):
        dst[i] = activate(src[i], kind)


@inline_helper
def map_activation(src, dst, kind):
    """dst[i] = act(src[i]); dst may be src."""
    if kind == RELU:
        _map(src, dst, RELU)
    elif kind == RELU6:
        _map(src, dst, RELU6)
    elif kind == SIGMOID:
        _map(src, dst, SIGMOID)
    elif kind == HARDSIGMOID:
        _map(src, dst, HARDSIGMOID)
    elif kind == HARDSWISH:
        _map(src, dst, HARDSWISH)
    elif kind == SILU:
        _map(src, dst, SILU)
    else:
        _map(src, dst, IDENTITY)


@inline_helper
def _affine_map(src, scale, shift, dst, kind):
    for i in range(src.shape[0]):
        dst[i] = activate(src[i] * scale[i] + shift[i], kind)


@inline_helper
def affine_activation(src, scale, shift, dst, kind):
    """dst[i] = act(src[i] * scale[i] + shift[i]) (batch norm's affine map, then the activation)."""
    if kind == RELU:
        _affine_map(src, scale, shift, dst, RELU)
    elif kind == RELU6:
        _affine_map(src, scale, shift, dst, RELU6)
    elif kind == SIGMOID:
        _affine_map(src, scale, shift, dst, SIGMOID)
    elif kind == HARDSIGMOID:
        _affine_map(src, scale, shift, dst, HARDSIGMOID)
    elif kind == HARDSWISH:
        _affine_map(src, scale, shift, dst, HARDSWISH)
    elif kind == SILU:
        _affine_map(src, scale, shift, dst, SILU)
    else:
        _affine_map(src, scale, shift, dst, IDENTITY)


@inline_helper
def _affine_map_inplace(buf, scale, shift, kind):
    # reading and writing one array: a separate dst that aliases it would fail the compiler's
    # runtime overlap check and fall back to scalar code
    for i in range(buf.shape[0]):
        buf[i] = activate(buf[i] * scale[i] + shift[i], kind)


@inline_helper
def affine_activation_inplace(buf, scale, shift, kind):
    """buf[i] = act(buf[i] * scale[i] + shift[i])."""
    if kind == RELU:
        _affine_map_inplace(buf, scale, shift, RELU)
    elif kind == RELU6:
        _affine_map_inplace(buf, scale, shift, RELU6)
    elif kind == SIGMOID:
        _affine_map_inplace(buf, scale, shift, SIGMOID)
    elif kind == HARDSIGMOID:
        _affine_map_inplace(buf, scale, shift, HARDSIGMOID)
    elif kind == HARDSWISH:
        _affine_map_inplace(buf, scale, shift, HARDSWISH)
    elif kind == SILU:
        _affine_map_inplace(buf, scale, shift, SILU)
    else:
        _affine_map_inplace(buf, scale, shift, IDENTITY)


@inline_helper
def _map_inplace(buf, kind):
    for i in range(buf.shape[0]):
        buf[i] = activate(buf[i], kind)


@inline_helper
def map_activation_inplace(buf, kind):
    """buf[i] = act(buf[i])."""
    if kind == RELU:
        _map_inplace(buf, RELU)
    elif kind == RELU6:
        _map_inplace(buf, RELU6)
    elif kind == SIGMOID:
        _map_inplace(buf, SIGMOID)
    elif kind == HARDSIGMOID:
        _map_inplace(buf, HARDSIGMOID)
    elif kind == HARDSWISH:
        _map_inplace(buf, HARDSWISH)
    elif kind == SILU:
        _map_inplace(buf, SILU)


@inline_helper
def _map_grad(grad, saved, dst, kind):
    for i in range(grad.shape[0]):
        dst[i] = grad[i] * activate_grad(saved[i], kind)


@inline_helper
def map_activation_grad(grad, saved, dst, kind):
    """dst[i] = grad[i] * act'(saved[i]); ``saved`` is the input (the output for SIGMOID_OF_OUTPUT)."""
    if kind == RELU:
        _map_grad(grad, saved, dst, RELU)
    elif kind == RELU6:
        _map_grad(grad, saved, dst, RELU6)
    elif kind == SIGMOID:
        _map_grad(grad, saved, dst, SIGMOID)
    elif kind == HARDSIGMOID:
        _map_grad(grad, saved, dst, HARDSIGMOID)
    elif kind == HARDSWISH:
        _map_grad(grad, saved, dst, HARDSWISH)
    elif kind == SILU:
        _map_grad(grad, saved, dst, SILU)
    elif kind == SIGMOID_OF_OUTPUT:
        _map_grad(grad, saved, dst, SIGMOID_OF_OUTPUT)
    else:
        _map_grad(grad, saved, dst, IDENTITY)


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
def affine_activation_block(rows, r0, r1, c0, c1, scale, shift, kind):
    """rows[r, c] = act(rows[r, c] * scale[c] + shift[c]) for r0 <= r < r1, c0 <= c < c1 of a
    C-contiguous 2-D ``rows``, in place; one branch on the kind for the whole block (short rows
    would otherwise pay it per row)."""
    if kind == RELU:
        _affine_block(rows, r0, r1, c0, c1, scale, shift, RELU)
    elif kind == RELU6:
        _affine_block(rows, r0, r1, c0, c1, scale, shift, RELU6)
    elif kind == SIGMOID:
        _affine_block(rows, r0, r1, c0, c1, scale, shift, SIGMOID)
    elif kind == HARDSIGMOID:
        _affine_block(rows, r0, r1, c0, c1, scale, shift, HARDSIGMOID)
    elif kind == HARDSWISH:
        _affine_block(rows, r0, r1, c0, c1, scale, shift, HARDSWISH)
    elif kind == SILU:
        _affine_block(rows, r0, r1, c0, c1, scale, shift, SILU)
    else:
        _affine_block(rows, r0, r1, c0, c1, scale, shift, IDENTITY)


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
