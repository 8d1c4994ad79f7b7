"""Zero-filled copies the convolution families share: padded inputs, gradients spread out by the stride."""
import numpy as np

from . import buffers
from .layout import nhwc


def _zero_padded(x, pads):
    """``np.pad(x, pads)`` (zeros) into a reused buffer."""
    out = buffers.empty([s + lo + hi for s, (lo, hi) in zip(x.shape, pads)], x.dtype)
    inner = tuple(slice(lo, lo + s) for s, (lo, _) in zip(x.shape, pads))
    for axis, (lo, hi) in enumerate(pads):  # only the borders are zeroed
        if lo:
            out[(slice(None),) * axis + (slice(0, lo),)] = 0
        if hi:
            out[(slice(None),) * axis + (slice(out.shape[axis] - hi, None),)] = 0
    out[inner] = x
    return out


def _pad(x, ph, pw):
    if ph == 0 and pw == 0:
        return x
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))


def _spread_by_stride(grad, size, kernel, stride, flipped_padding, dilation):
    """[N, rows, cols, O]: ``grad`` channels-last with zeros between its pixels (the stride) and below /
    right of them for input rows no output reads, so that a stride-1 convolution with the flipped
    kernel and ``flipped_padding`` gives the input's ``size``; ``grad`` itself for stride 1."""
    g = nhwc(grad)
    if stride == (1, 1):
        return g
    n, oh, ow, o = g.shape
    rows = size[0] - 2 * flipped_padding[0] + (kernel[0] - 1) * dilation[0]
    cols = size[1] - 2 * flipped_padding[1] + (kernel[1] - 1) * dilation[1]
    spread = buffers.zeros((n, rows, cols, o), g.dtype)
    spread[:, :(oh - 1) * stride[0] + 1:stride[0], :(ow - 1) * stride[1] + 1:stride[1]] = g
    return spread
