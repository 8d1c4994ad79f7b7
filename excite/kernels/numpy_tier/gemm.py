"""NumPy twins of `compiled.gemm`: the 1x1 products through BLAS, the implicit dense product as
gathered taps (a strided view of the padded input indexed by the tap offsets) times the weight.

Every twin writes what its kernel writes, to float tolerance (the sums run in BLAS's order, not the
micro-kernels'); the shared pieces (`_gather`, `_product`, `_epilogue`) serve `numpy_tier.grouped` too.
"""
import numpy as np
from numpy.lib.stride_tricks import as_strided

from ..activations import IDENTITY
from ..blas import matmul
from ._activation import activate

GATHER_ELEMENTS = 1 << 20  # gathered taps held at a time (4 MB of float32): the products run by blocks of rows
EPILOGUE_ELEMENTS = 1 << 14  # outputs the epilogue's NumPy temporaries cover at a time (in L1/L2)


# ----- shared pieces ----------------------------------------------------------------------------
def _epilogue(out, scale, shift, residual, kind):
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


def _windows(xp, span, run, n, oh, ow, sn, sh, sw):
    """A view [n, oh, ow, span, run] of the flat ``xp``: element (img, oy, ox, s, r) is xp[img*sn + oy*sh +
    ox*sw + s + r], so ``view[..., starts]`` gathers a run of ``run`` elements from each tap start."""
    step = xp.strides[0]
    return as_strided(xp, shape=(n, oh, ow, span, run), strides=(sn * step, sh * step, sw * step, step, step),
                      writeable=False)


def _unit_runs(offsets):
    """Whether every row along the last axis of ``offsets`` steps by one element."""
    return offsets.shape[-1] > 1 and bool(np.all(np.diff(offsets, axis=-1) == 1))


def _arrange(offsets):
    """``(runs, swap)``: the taps ``offsets`` [G, K] laid out as [G, M, R] with unit-step runs of R elements
    along the last axis where they have such runs (channels-last taps: the channels), so gathers copy runs
    instead of single elements. ``swap`` is None when ``runs`` is ``offsets.reshape(G, M, R)`` (K's order);
    else (a, b): ``runs`` is ``offsets.reshape(G, a, b).transpose(0, 2, 1)`` (channel-major taps, the kernels'
    (channel, kernel row, kernel column) order)."""
    groups, k = offsets.shape
    first = offsets[0]
    steps = np.diff(first) == 1
    length = k if steps.all() else int(np.argmin(steps)) + 1  # the first run's length
    best = offsets.reshape(groups, k, 1), None
    if length > 1 and k % length == 0 and _unit_runs(offsets.reshape(groups, k // length, length)):
        best = offsets.reshape(groups, k // length, length), None
    nexts = np.flatnonzero(first == first[0] + 1)
    if nexts.size and nexts[0] > 1 and k % nexts[0] == 0:
        b = int(nexts[0])
        swapped = offsets.reshape(groups, k // b, b).transpose(0, 2, 1)
        if k // b > best[0].shape[2] and _unit_runs(swapped):
            best = swapped, (k // b, b)
    return best


def _gather(xp, offsets, oh, ow, sn, sh, sw, r0, r1):
    """Yield ``(p0, p1, taps)`` covering the output rows r0..r1 (flat over [n, oh]) in order: for output
    pixels p0..p1 (flat over [n, oh, ow]), ``taps`` [p1 - p0, *offsets.shape] = xp[img*sn + oy*sh + ox*sw +
    offsets] (a new array of about `GATHER_ELEMENTS` at most, at least one output row). Where the last axis
    of ``offsets`` steps by one element (see `_arrange`), each run is copied whole."""
    offsets = np.asarray(offsets, dtype=np.int64)
    run = offsets.shape[-1] if offsets.ndim and _unit_runs(offsets) else 1
    starts = offsets[..., 0] if run > 1 else offsets
    span = int(starts.max()) + 1 if starts.size else 1
    view = _windows(xp, span, run, -(-r1 // oh), oh, ow, sn, sh, sw)
    if run == 1:
        view = view[..., 0]
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
        taps = piece[:, :, :, starts] if run > 1 else piece[..., starts]
        yield r * ow, (r + count) * ow, taps.reshape((-1,) + offsets.shape)
        r += count


def _product(xp, offsets, w, out, sn, sh, sw):
    """out[n, oy, ox, g*og + j] = sum_k xp[n*sn + oy*sh + ox*sw + offsets[g, k]] * w[g, k, j] for
    ``offsets`` [G, K], ``w`` [G, K, og] and ``out`` [N, OH, OW, G*og] (no epilogue)."""
    n, oh, ow, o = out.shape
    groups, k, og = w.shape
    runs, swap = _arrange(np.asarray(offsets, dtype=np.int64))
    if swap is not None:  # the sum over K in the gathered order: the weight's rows in that order too
        w = np.ascontiguousarray(w.reshape(groups, *swap, og).transpose(0, 2, 1, 3)).reshape(groups, k, og)
    target = out if out.flags.c_contiguous else np.empty(out.shape, out.dtype)
    rows = target.reshape(-1, o)
    for p0, p1, taps in _gather(xp, runs, oh, ow, sn, sh, sw, 0, n * oh):
        taps = taps.reshape(p1 - p0, groups, k)
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


def _gather_rows(xp, offsets, rows, sn, sh, sw, oh, ow):
    """rows[m, :] = xp[start of pixel m + offsets] (``offsets`` flat, ``rows`` [P, offsets.size])."""
    pixels = rows.shape[0]
    offsets = np.asarray(offsets, dtype=np.int64)
    if ow and pixels % ow == 0:
        runs, swap = _arrange(offsets.reshape(1, -1))
        if swap is not None and not rows.flags.c_contiguous:  # the swapped copy writes through a reshaped view
            runs, swap = offsets.reshape(1, -1, 1), None
        for p0, p1, taps in _gather(xp, runs[0], oh, ow, sn, sh, sw, 0, pixels // ow):
            if swap is None:
                rows[p0:p1] = taps.reshape(p1 - p0, -1)
            else:
                rows[p0:p1].reshape(p1 - p0, *swap)[...] = taps.transpose(0, 2, 1)
        return
    step = max(1, GATHER_ELEMENTS // max(1, offsets.size))
    for m0 in range(0, pixels, step):
        m1 = min(pixels, m0 + step)
        rows[m0:m1] = xp[_bases(m0, m1, sn, sh, sw, oh, ow)[:, None] + offsets[None, :]]


def _chunk_bounds(total, chunks):
    """The kernels' fixed split of ``total`` items into ``chunks`` (the last ones may be short or empty)."""
    per_chunk = (total + chunks - 1) // chunks
    return [(min(total, t * per_chunk), min(total, (t + 1) * per_chunk)) for t in range(chunks)]


# ----- the twins --------------------------------------------------------------------------------
def matmul_broadcast(a, b, out, scale, shift, residual, kind, row_block, panel_group):
    """``out = act(a @ b * scale + shift) + residual`` for ``b`` = w.T [K, N] or its panels
    (`pointwise.packed_panels`)."""
    k, n = a.shape[1], out.shape[1]
    if b.shape[1] != n:
        b = b.reshape(-1, k, b.shape[1]).transpose(1, 0, 2).reshape(k, -1)[:, :n]
    matmul(a, b, out=out)
    _epilogue(out, scale, shift, residual, kind)


def matmul_dot(a, w, out, scale, shift, residual, kind, row_block, col_group):
    """``out = act(a @ w.T * scale + shift) + residual`` for ``w`` [N, K] (or longer rows: ``w[:, :K]``)."""
    matmul(a, w[:, :a.shape[1]].T, out=out)
    _epilogue(out, scale, shift, residual, kind)


def conv_dense(x, koff, b, out, scale, shift, kind, sh, sw, ph, pw, band, rows, unit):
    """``out[n, oy, ox] = act(sum_k X[n, oy*sh + ox*sw + tap k] * b[k] * scale + shift)``, X the padded
    ``x`` [N, P, H, W * unit]; ``koff``: the taps' offsets in a copy of ``rows`` padded rows, here
    moved to one padded copy of the whole input."""
    n, planes, h, width = x.shape
    xp = np.zeros((n, planes, h + 2 * ph, width + 2 * pw * unit), x.dtype)
    xp[:, :, ph:ph + h, pw * unit:pw * unit + width] = x
    plane, within = np.divmod(koff, rows * xp.shape[3])
    offsets = plane * (xp.shape[2] * xp.shape[3]) + within
    _product(xp.reshape(-1), offsets.reshape(1, -1), b.reshape((1,) + b.shape), out, xp[0].size, sh * xp.shape[3],
             sw * unit)
    _epilogue(out, scale, shift, np.empty((0, 0), out.dtype), kind)


def matmul_at_b(a, b, partial, k_block):
    """``partial[t] = a[k-chunk t].T @ b[k-chunk t]``, the chunks of rows as the kernel splits them."""
    for t, (k0, k1) in enumerate(_chunk_bounds(a.shape[0], partial.shape[0])):
        if k1 > k0:
            matmul(a[k0:k1].T, b[k0:k1], out=partial[t])
        else:
            partial[t] = 0


def gather_taps(xp, koff, rows, sn, sh, sw, oh, ow):
    """rows[m, t] = xp[n*sn + oy*sh + ox*sw + koff[t]] for output pixel m = (n, oy, ox)."""
    _gather_rows(xp, np.asarray(koff, dtype=np.int64), rows, sn, sh, sw, oh, ow)
