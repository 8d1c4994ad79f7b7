"""Memory layouts of NCHW arrays: row-major NCHW or channels-last (NHWC memory, NCHW shape).

Shapes are always NCHW; only the strides differ. The convolution kernels produce
channels-last results (1x1 convolutions are then one matrix product, depthwise ones vectorise
over channels), and NumPy's elementwise operations keep that layout, so a network stays
channels-last from its first convolution on; arrays convert at the edges, when a kernel needs
the other layout.
"""
import numpy as np

from . import buffers


def is_channels_last(a):
    """True if the 4-D array ``a`` is an NCHW view of C-contiguous NHWC memory."""
    return a.ndim == 4 and a.transpose(0, 2, 3, 1).flags.c_contiguous


def nhwc(a):
    """The [N, H, W, C] C-contiguous array holding ``a``'s values (a view when ``a`` is channels-last)."""
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1))


def from_nhwc(a):
    """The NCHW-shaped view of the [N, H, W, C] array ``a``."""
    return a.transpose(0, 3, 1, 2)


def empty_nhwc(n, c, h, w, dtype):
    """An uninitialised channels-last array of NCHW shape [n, c, h, w]."""
    return buffers.empty((n, h, w, c), dtype).transpose(0, 3, 1, 2)


def flat(a):
    """A 1-D view of ``a``'s memory if it is contiguous in any axis order, else None.

    Two arrays of the same shape and strides give the same element order, which is all that
    elementwise kernels need.
    """
    if a.flags.c_contiguous:
        return a.reshape(-1)
    if a.flags.f_contiguous:
        return a.T.reshape(-1)
    if is_channels_last(a):
        return a.transpose(0, 2, 3, 1).reshape(-1)
    return None


def like(a, template):
    """``a`` with ``template``'s memory layout (a copy only when the layouts differ)."""
    if a.strides == template.strides and flat(a) is not None:
        return a
    out = buffers.empty_like(template, a.dtype)
    np.copyto(out, a)
    return out
