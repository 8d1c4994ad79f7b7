"""NumPy twins of `compiled.gemm`: the 1x1 products through BLAS, the implicit dense product as
gathered taps (a strided view of the padded input indexed by the tap offsets) times the weight.

Every twin writes what its kernel writes, to float tolerance (the sums run in BLAS's order, not the
micro-kernels'); the shared pieces (`gather`, `product`, `epilogue`) serve `numpy_tier.grouped` too.
"""
import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..blas import matmul
from ..activations import IDENTITY
from ._activation import activate

GATHER_ELEMENTS = 1 << 20  # gathered taps held at a time (4 MB of float32): the products run by blocks of rows
EPILOGUE_ELEMENTS = 1 << 14  # outputs the epilogue's NumPy temporaries cover at a time (in L1/L2)


# ----- shared pieces ----------------------------------------------------------------------------
def epilogue(out, scale, shift, residual, kind):
    """out = act(out * scale + shift) (+ residual unless it is empty), in place, in out's dtype; by blocks
    of rows (``out``'s last axis is the channels) so the temporaries stay in cache."""
    channels = out.shape[-1] if out.ndim else 1
    if not out.flags.c_contiguous or out.size == 0:
        out[...] = activate(out * scale + shift, kind)
        if residual.shape[0]:
            out += residual
        return
    rows = out.reshape(-1, channels)
    extra = residual.reshape(-1, channels) if residual.shape[0] else None
    step = max(1, EPILOGUE_ELEMENTS // max(1, channels))
    for r0 in range(0, rows.shape[0], step):
        block = rows[r0:r0 + step]
        np.multiply(block, scale, out=block)
        np.add(block, shift, out=block)
        if kind != IDENTITY:
            block[...] = activate(block, kind)
        if extra is not None:
            block += extra[r0:r0 + step]


def _windows(xp, offsets, n, oh, ow, sn, sh, sw):
    """A view [n, oh, ow, L] of the flat ``xp``: window (img, oy, ox) starts at img*sn + oy*sh + ox*sw and
    reaches the largest offset (L = max offset + 1), so ``view[..., offsets]`` gathers the taps."""
    step = xp.strides[0]
    span = int(offsets.max()) + 1 if offsets.size else 1
    return as_strided(xp, shape=(n, oh, ow, span), strides=(sn * step, sh * step, sw * step, step), writeable=False)


def gather(xp, offsets, oh, ow, sn, sh, sw, r0, r1):
    """Yield ``(p0, p1, taps)`` covering the output rows r0..r1 (flat over [n, oh]) in order: for output
    pixels p0..p1 (flat over [n, oh, ow]), ``taps`` [p1 - p0, *offsets.shape] = xp[img*sn + oy*sh + ox*sw +
    offsets] (a new array of about `GATHER_ELEMENTS` at most, at least one output row)."""
    offsets = np.asarray(offsets, dtype=np.int64)
    view = _windows(xp, offsets, -(-r1 // oh), oh, ow, sn, sh, sw)
    rows_per = max(1, GATHER_ELEMENTS // max(1, offsets.size * ow))
    r = r0
    while r < r1:
        img, y = divmod(r, oh)
        if y == 0 and r1 - r >= oh and rows_per >= oh:
            images = min((r1 - r) // oh, rows_per // oh)
            piece, count = view[img:img + images], images * oh
        else:
            y1 = min(oh, y + min(rows_per, r1 - r))
            piece, count = view[img:img + 1, y:y1], y1 - y
        yield r * ow, (r + count) * ow, piece[..., offsets].reshape((-1,) + offsets.shape)
        r += count


def product(xp, offsets, w, out, sn, sh, sw):
    """out[n, oy, ox, g*og + j] = sum_k xp[n*sn + oy*sh + ox*sw + offsets[g, k]] * w[g, k, j] for
    ``offsets`` [G, K], ``w`` [G, K, og] and ``out`` [N, OH, OW, G*og] (no epilogue)."""
    n, oh, ow, o = out.shape
    groups, k, og = w.shape
    target = out if out.flags.c_contiguous else np.empty(out.shape, out.dtype)
    rows = target.reshape(-1, o)
    for p0, p1, taps in gather(xp, offsets, oh, ow, sn, sh, sw, 0, n * oh):
        if groups == 1:
            matmul(taps.reshape(p1 - p0, k), w[0], out=rows[p0:p1])
        else:
            # [G, P, K] @ [G, K, og] -> [G, P, og], written through a view of the output's [P, G, og]
            np.matmul(taps.transpose(1, 0, 2), w, out=rows[p0:p1, :groups * og].reshape(p1 - p0, groups, og)
                      .transpose(1, 0, 2))
    if target is not out:
        out[...] = target


def _bases(m0, m1, sn, sh, sw, oh, ow):
    """The window start of output pixels m0..m1 (flat over [n, oh, ow])."""
    m = np.arange(m0, m1, dtype=np.int64)
    r = m % (oh * ow)
    return (m // (oh * ow)) * sn + (r // ow) * sh + (r % ow) * sw


def gather_rows(xp, offsets, rows, sn, sh, sw, oh, ow):
    """rows[m, :] = xp[start of pixel m + offsets] (``offsets`` flat, ``rows`` [P, offsets.size])."""
    pixels = rows.shape[0]
    if ow and pixels % ow == 0:
        for p0, p1, taps in gather(xp, offsets, oh, ow, sn, sh, sw, 0, pixels // ow):
            rows[p0:p1] = taps
        return
    step = max(1, GATHER_ELEMENTS // max(1, offsets.size))
    for m0 in range(0, pixels, step):
        m1 = min(pixels, m0 + step)
        rows[m0:m1] = xp[_bases(m0, m1, sn, sh, sw, oh, ow)[:, None] + offsets[None, :]]


def chunk_bounds(total, chunks):
    """The kernels' fixed split of ``total`` items into ``chunks`` (the last ones may be short or empty)."""
    per_chunk = (total + chunks - 1) // chunks
    return [(min(total, t * per_chunk), min(total, (t + 1) * per_chunk)) for t in range(chunks)]


# ----- the twins --------------------------------------------------------------------------------
def matmul_broadcast(a, b, out, scale, shift, residual, kind, row_block, panel_group):
    """``out = act(a @ b * scale + shift) + residual`` for ``b`` = w.T [K, N]."""
    matmul(a, b, out=out)
    epilogue(out, scale, shift, residual, kind)


def matmul_dot(a, w, out, scale, shift, residual, kind, row_block, col_group):
    """``out = act(a @ w.T * scale + shift) + residual`` for ``w`` [N, K]."""
    matmul(a, w.T, out=out)
    epilogue(out, scale, shift, residual, kind)


def conv_dense(xp, koff, b, out, scale, shift, kind, sn, sh, sw):
    """``out[n, oy, ox] = act(sum_k xp[n*sn + oy*sh + ox*sw + koff[k]] * b[k] * scale + shift)``."""
    product(xp, koff.reshape(1, -1), b.reshape((1,) + b.shape), out, sn, sh, sw)
    epilogue(out, scale, shift, np.empty((0, 0), out.dtype), kind)


def matmul_at_b(a, b, partial, k_block):
    """``partial[t] = a[k-chunk t].T @ b[k-chunk t]``, the chunks of rows as the kernel splits them."""
    for t, (k0, k1) in enumerate(chunk_bounds(a.shape[0], partial.shape[0])):
        if k1 > k0:
            matmul(a[k0:k1].T, b[k0:k1], out=partial[t])
        else:
            partial[t] = 0


def gather_taps(xp, koff, rows, sn, sh, sw, oh, ow):
    """rows[m, t] = xp[n*sn + oy*sh + ox*sw + koff[t]] for output pixel m = (n, oy, ox)."""
    gather_rows(xp, np.asarray(koff, dtype=np.int64), rows, sn, sh, sw, oh, ow)
