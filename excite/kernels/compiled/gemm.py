"""Compiled matrix products for channels-last 1x1 convolutions, with the epilogue fused.

``out[m, n] = act((a @ w.T)[m, n] * scale[n] + shift[n]) + residual[m, n]`` for ``a`` [M, K]
(pixels by input channels) and the weight ``w`` [N, K]. NumPy's BLAS cannot fuse the batch norm,
activation and residual add that follow a 1x1 convolution, and it picks its kernels by CPU name
(on CPUs it does not know it falls back to older, narrower ones), so the inner loops are written
here as LLVM IR with explicit SIMD vectors. Two micro-kernels:

- `_broadcast_tile` (many rows): a tile of MR rows by two vectors of columns stays in registers for
  the whole reduction over K; each step broadcasts one ``a`` value per row against two vectors
  of the transposed weight ``b = w.T``. Fastest, but needs ``b`` (one small transpose per call).
- `_dot_tile` (few rows, the late layers at batch 1, where the weight is larger than the
  activations): 4 x 4 dot products vectorised along K, reading ``a`` and ``w`` as they are
  (`_dot_row`, 1 x 16, for matrix-vector products).

Every output is the same sum in the same order whatever the tiling and thread count, so results do
not depend on EXCITE_NUM_THREADS.
"""
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic

from .activation_math import VECTOR_KINDS, activated_in_tile, emit_activation
from .elementwise import activation_block, affine_activation_block
from ..activations import IDENTITY
from .simd import (VECTOR_BYTES, Vectors, as_i64, blocked_sums, counted_loop, data_pointer, only_if, specialised,
                   switch_values)
from ..threads import helper, inline_helper, kernel

MR = 6  # rows per broadcast tile (by two vectors of columns: 12 accumulators)
DOT = 4  # the dot tile is DOT rows by DOT weight rows (16 accumulators)
SUM_BLOCK = 128  # the broadcast tiles' sums over K run in blocks of this many terms (`simd.blocked_sums`)
CHUNK_BYTES = 1 << 14  # rows of ``a`` a broadcast task sweeps across its panels at a time


def panel_width(dtype):
    """Columns per broadcast tile: two SIMD vectors of ``dtype``."""
    return 2 * VECTOR_BYTES // np.dtype(dtype).itemsize


def _broadcast_tile_intrinsic(variant, tile_rows=MR, vectors=2, accumulate=False, vector_bytes=VECTOR_BYTES,
                              epilogue=True):
    """``tile(a, a_off, lda, b, b_off, ldb, k, c, c_off, ldc, rows, width[, extra], scale, shift, s_off, kind)``:
    ``c[c_off + i * ldc + j] = act(S * scale[s_off + j] + shift[s_off + j])`` with S = ``sum over kk < k
    of A(i, kk) * b[b_off + kk * ldb + j]`` and ``act`` the activation ``kind`` where it is one of
    `activation_math.VECTOR_KINDS` (else the caller applies it: `_tile_epilogue`); without ``epilogue``
    (no scale ... kind arguments) ``c = S`` (``+=`` when ``accumulate``: the sums start from ``c``) for
    i < rows <= tile_rows, j < width <= ``vectors`` SIMD vectors (two: NR columns), where A(i, kk) is

    - ``"rows"``: ``a[a_off + i * lda + kk]`` (rows of ``a``);
    - ``"gathered"``: ``a[a_off + i * lda + koff[kk]]``, ``extra`` = koff (an implicit im2col: each
      tap's offset in the padded input);
    - ``"columns"``: ``a[a_off + i * lda + kk * extra]`` (columns of ``a``: ``a.T @ b``).

    The tile_rows * vectors accumulators stay in registers across kk (summing in blocks of SUM_BLOCK terms); the loads of ``b`` and the stores of ``c``
    are masked to ``width`` columns, rows past ``rows`` repeat the last one and are not stored, so
    edge tiles need no padded copies."""
    gathered, columns = variant == "gathered", variant == "columns"

    def codegen(context, builder, signature, args):
        v = Vectors(context, builder, signature.args[0].dtype, vector_bytes)
        a_data = data_pointer(context, builder, signature.args[0], args[0], "a")
        b_data = data_pointer(context, builder, signature.args[3], args[3], "b")
        c_data = data_pointer(context, builder, signature.args[7], args[7], "c")
        a_off, lda, b_off, ldb, count, c_off, ldc, rows, width = as_i64(builder, args[1:3] + args[4:7] + args[8:12])
        koff_data = data_pointer(context, builder, signature.args[12], args[12], "koff") if gathered else None
        ak = as_i64(builder, [args[12]])[0] if columns else None
        if epilogue:
            first = 12 if variant == "rows" else 13
            scale_data = data_pointer(context, builder, signature.args[first], args[first], "scale")
            shift_data = data_pointer(context, builder, signature.args[first + 1], args[first + 1], "shift")
            s_off, kind = as_i64(builder, args[first + 2:first + 4])
        last = builder.sub(rows, v.const(1))
        a_rows = []
        for i in range(tile_rows):
            row = builder.select(builder.icmp_signed("<", v.const(i), rows), v.const(i), last)
            a_rows.append(v.at(a_data, builder.add(a_off, builder.mul(row, lda))))
        b_base = v.at(b_data, b_off)
        masks = [v.lanes_below(width, j * v.lanes) for j in range(vectors)]
        none = ir.Constant(masks[0].type, [0] * v.lanes)
        c_rows = [v.at(c_data, builder.add(c_off, builder.mul(v.const(i), ldc))) for i in range(tile_rows)]

        def affine_activation(masked, sums):
            # act(S * scale + shift): a multiply and an add, as the scalar epilogue rounds them
            scale_at, shift_at = v.at(scale_data, s_off), v.at(shift_data, s_off)
            scales = [v.load_first(scale_at, j * v.lanes, masks[j]) if masked else v.load(scale_at, j * v.lanes)
                      for j in range(vectors)]
            shifts = [v.load_first(shift_at, j * v.lanes, masks[j]) if masked else v.load(shift_at, j * v.lanes)
                      for j in range(vectors)]
            mapped = [builder.fadd(builder.fmul(total, scales[i % vectors]), shifts[i % vectors])
                      for i, total in enumerate(sums)]
            return switch_values(builder, kind, mapped, {
                code: (lambda values, code=code: [emit_activation(builder, code, value) for value in values])
                for code in VECTOR_KINDS if code != IDENTITY})

        def emit(masked):
            def row_mask(i, j):
                return builder.select(builder.icmp_signed("<", v.const(i), rows), masks[j], none)

            def step(kk, accs):
                b_row = v.at(b_base, builder.mul(kk, ldb))
                b_vecs = [v.load_first(b_row, j * v.lanes, masks[j]) if masked else v.load(b_row, j * v.lanes)
                          for j in range(vectors)]
                if gathered:
                    offset = as_i64(builder, [v.load_scalar(koff_data, kk)])[0]
                else:
                    offset = builder.mul(kk, ak) if columns else kk
                out = []
                for i in range(tile_rows):
                    a_val = v.splat(v.load_scalar(a_rows[i], offset))
                    out += [v.fma(a_val, b_vecs[j], accs[vectors * i + j]) for j in range(vectors)]
                return out

            if accumulate:
                start = [v.load_first(c_rows[i], j * v.lanes, row_mask(i, j)) if masked else v.load(c_rows[i], j * v.lanes)
                         for i in range(tile_rows) for j in range(vectors)]
            else:
                start = [v.zero] * (vectors * tile_rows)
            final = blocked_sums(builder, count, start, step, "masked" if masked else "tile", SUM_BLOCK, v.zero)
            if epilogue:
                final = affine_activation(masked, final)
            for i in range(tile_rows):
                for j in range(vectors):
                    if masked:
                        v.store_masked(final[vectors * i + j], c_rows[i], j * v.lanes, row_mask(i, j))
                    else:
                        v.store(final[vectors * i + j], c_rows[i], j * v.lanes)

        # full tiles take plain loads and stores (masked ones cost more on some CPUs)
        full = builder.and_(builder.icmp_signed("==", rows, v.const(tile_rows)),
                             builder.icmp_signed("==", width, v.const(vectors * v.lanes)))
        specialised(builder, full, lambda plain: emit(not plain))
        return context.get_dummy_value()

    if variant == "rows":
        @intrinsic
        def tile(typingctx, a, a_off, lda, b, b_off, ldb, k, c, c_off, ldc, rows, width, scale, shift, s_off, kind):
            return types.void(a, a_off, lda, b, b_off, ldb, k, c, c_off, ldc, rows, width, scale, shift, s_off,
                              kind), codegen
    elif epilogue:
        @intrinsic
        def tile(typingctx, a, a_off, lda, b, b_off, ldb, k, c, c_off, ldc, rows, width, extra, scale, shift, s_off,
                 kind):
            return types.void(a, a_off, lda, b, b_off, ldb, k, c, c_off, ldc, rows, width, extra, scale, shift,
                              s_off, kind), codegen
    else:
        @intrinsic
        def tile(typingctx, a, a_off, lda, b, b_off, ldb, k, c, c_off, ldc, rows, width, extra):
            return types.void(a, a_off, lda, b, b_off, ldb, k, c, c_off, ldc, rows, width, extra), codegen
    return tile


_broadcast_tile = _broadcast_tile_intrinsic("rows")
_broadcast_tile_narrow = _broadcast_tile_intrinsic("rows", 2 * MR, 1)  # outputs one vector wide or less
_gathered_tile = _broadcast_tile_intrinsic("gathered")
# outputs one vector wide or less (16-channel stems, RegNet's 8-wide groups): twice the rows, one
# vector, so no half-masked tile multiplies zeros
NARROW_MR = 2 * MR
_gathered_tile_narrow = _broadcast_tile_intrinsic("gathered", NARROW_MR, 1)
# outputs half a vector wide or less (RegNet's 8-wide groups in float32): half-width vectors, as many per
# cycle as full ones on CPUs that split 512-bit operations, no lanes multiplying zeros
_gathered_tile_half = _broadcast_tile_intrinsic("gathered", NARROW_MR, 1, vector_bytes=VECTOR_BYTES // 2)
_columns_tile = _broadcast_tile_intrinsic("columns", accumulate=True, epilogue=False)


# ----- the dot-product micro-kernel -------------------------------------------------------------
def _folding_plan(count, lanes):
    """Shuffle masks that sum ``count`` vectors pairwise into count / lanes vectors of totals,
    and which source vector each final lane holds (the folding permutes them)."""
    labels = [[src] * lanes for src in range(count)]
    levels = []
    group = lanes
    while group > 1 and len(labels) > 1:
        half = group // 2
        lo, hi = [], []
        for q in range(lanes // group):
            lo += [q * group + t for t in range(half)] + [lanes + q * group + t for t in range(half)]
            hi += [q * group + half + t for t in range(half)] + [lanes + q * group + half + t for t in range(half)]
        labels = [[(x + y)[i] for i in lo] for x, y in zip(labels[0::2], labels[1::2])]
        levels.append((lo, hi))
        group = half
    order = [src for vec in labels for src in vec]
    assert sorted(order) == list(range(count)) and len(labels) <= 2
    return levels, order


def _dot_tile_intrinsic(rows, cols):
    """``tile(a, a_off, lda, w, w_off, ldw, k, c, c_off, ldc)``: ``c[c_off + i * ldc + j] = sum over
    kk < k of a[a_off + i * lda + kk] * w[w_off + j * ldw + kk]`` for i < rows, j < cols: per
    accumulator, lane-wise partial sums over K (the tail through masked loads), folded into totals
    at the end (the same order for every shape, so the two tile shapes give identical sums)."""

    @intrinsic
    def tile(typingctx, a, a_off, lda, w, w_off, ldw, k, c, c_off, ldc):
        sig = types.void(a, a_off, lda, w, w_off, ldw, k, c, c_off, ldc)

        def codegen(context, builder, signature, args):
            v = Vectors(context, builder, signature.args[0].dtype)
            a_data = data_pointer(context, builder, signature.args[0], args[0], "a")
            w_data = data_pointer(context, builder, signature.args[3], args[3], "w")
            c_data = data_pointer(context, builder, signature.args[7], args[7], "c")
            a_off, lda, w_off, ldw, count, c_off, ldc = as_i64(builder, args[1:3] + args[4:7] + args[8:10])
            a_rows = [v.at(a_data, builder.add(a_off, builder.mul(v.const(i), lda))) for i in range(rows)]
            w_rows = [v.at(w_data, builder.add(w_off, builder.mul(v.const(j), ldw))) for j in range(cols)]
            full = builder.sdiv(count, v.const(v.lanes))

            def multiply_add(accs, load):
                a_vecs = [load(row) for row in a_rows]
                w_vecs = [load(row) for row in w_rows]
                return [v.fma(a_vecs[i], w_vecs[j], accs[i * cols + j]) for i in range(rows) for j in range(cols)]

            def step(s, accs):
                offset = builder.mul(s, v.const(v.lanes))
                return multiply_add(accs, lambda row: v.load(row, offset))

            accs = counted_loop(builder, full, [v.zero] * (rows * cols), step, "dot")
            tail_start = builder.mul(full, v.const(v.lanes))
            mask = v.lanes_below(builder.sub(count, tail_start))
            accs = only_if(builder, builder.icmp_signed("<", tail_start, count), accs,
                           lambda values: multiply_add(values, lambda row: v.load_first(row, tail_start, mask)))

            levels, order = _folding_plan(rows * cols, v.lanes)
            for lo, hi in levels:
                accs = [builder.fadd(v.shuffle(x, y, lo), v.shuffle(x, y, hi)) for x, y in zip(accs[0::2], accs[1::2])]
            second = accs[1] if len(accs) == 2 else ir.Constant(v.vec, ir.Undefined)
            for i in range(rows):
                row = v.shuffle(accs[0], second, [order.index(i * cols + j) for j in range(cols)])
                v.store(row, c_data, builder.add(c_off, builder.mul(v.const(i), ldc)))
            return context.get_dummy_value()

        return sig, codegen

    return tile


_dot_tile = _dot_tile_intrinsic(DOT, DOT)
_dot_row = _dot_tile_intrinsic(1, DOT * DOT)  # one row against 16 weight rows: matrix-vector products


# ----- drivers ----------------------------------------------------------------------------------
@helper
def _add_residual(out, r0, r1, c0, c1, residual):
    """out[r, c0:c1] += residual[r, c0:c1] for rows r0..r1, unless ``residual`` is empty."""
    if residual.shape[0]:
        for r in range(r0, r1):
            dst = out[r, c0:c1]
            res = residual[r, c0:c1]
            for j in range(c1 - c0):
                dst[j] += res[j]


@helper
def _epilogue(out, r0, r1, c0, c1, scale, shift, residual, kind):
    """out[r, c0:c1] = act(out[r, c0:c1] * scale + shift) (+ residual unless it is empty), rows r0..r1."""
    affine_activation_block(out, r0, r1, c0, c1, scale, shift, kind)
    _add_residual(out, r0, r1, c0, c1, residual)


@helper
def _tile_epilogue(out, r0, r1, c0, c1, residual, kind):
    """What the broadcast tiles leave of `_epilogue`, rows r0..r1 by columns c0..c1: the activation
    where it has no vector form (`activation_math.VECTOR_KINDS`), then the residual."""
    if not activated_in_tile(kind):
        activation_block(out, r0, r1, c0, c1, kind)
    _add_residual(out, r0, r1, c0, c1, residual)


@kernel
def matmul_broadcast(a, b, out, scale, shift, residual, kind, row_block, panel_group):
    """``out = act(a @ b * scale + shift) + residual`` with the broadcast tile; ``b`` = w.T [K, N], or
    the same in panels (`pointwise.packed_panels`: [panels * K, NR], each panel's K rows of NR columns
    in a row).

    ``a`` [M, K], ``b`` and ``out`` [M, N] are C-contiguous; ``residual`` is [M, N] or [0, 0].
    Tasks are blocks of ``row_block`` rows by groups of ``panel_group`` panels of NR columns; a
    task sweeps a chunk of rows (kept in L1) across its panels, then applies the epilogue to it.
    """
    m, k = a.shape
    n = out.shape[1]
    nr = 2 * VECTOR_BYTES // a.itemsize
    packed = b.shape[1] != n  # (with N = NR the two layouts are one)
    panels = (n + nr - 1) // nr
    row_blocks = (m + row_block - 1) // row_block
    groups = (panels + panel_group - 1) // panel_group
    chunk = max(1, CHUNK_BYTES // (k * a.itemsize * MR)) * MR
    for task in prange(row_blocks * groups):
        r0 = (task // groups) * row_block
        r1 = min(m, r0 + row_block)
        p0 = (task % groups) * panel_group
        p1 = min(panels, p0 + panel_group)
        for c0 in range(r0, r1, chunk):
            c1 = min(r1, c0 + chunk)
            for p in range(p0, p1):
                col = p * nr
                width = min(nr, n - col)
                b_off, ldb = (p * k * nr, nr) if packed else (col, n)
                if 2 * width <= nr:  # one vector: twice the rows, no half-masked second vector
                    for r in range(c0, c1, 2 * MR):
                        _broadcast_tile_narrow(a, r * k, k, b, b_off, ldb, k, out, r * n + col, n,
                                               min(2 * MR, c1 - r), width, scale, shift, col, kind)
                    continue
                for r in range(c0, c1, MR):
                    _broadcast_tile(a, r * k, k, b, b_off, ldb, k, out, r * n + col, n, min(MR, c1 - r), width, scale,
                                    shift, col, kind)
            _tile_epilogue(out, c0, c1, p0 * nr, min(n, p1 * nr), residual, kind)


@helper
def dot_block(a, w, out, scale, shift, residual, kind, r0, r1, n0, n1):
    """Rows r0..r1 by columns n0..n1 of ``out = act(a @ w.T * scale + shift) + residual`` (serial).

    Blocks of DOT rows or more use DOT x DOT tiles; fewer rows, one row by 16 columns at a time. ``w``'s
    rows may be longer than K (`pointwise` pads them so they do not start 2 or 4 KB apart); the padding
    is never read.
    """
    k = a.shape[1]
    n = w.shape[0]
    ldw = w.shape[1]
    tile_rows, tile_cols = DOT, DOT
    if r1 - r0 < DOT:
        tile_rows, tile_cols = 1, DOT * DOT
    tile = np.empty((tile_rows, tile_cols), dtype=a.dtype)
    # edge tiles read zero-padded copies of the last rows / columns, made once
    rows_pad = np.zeros((tile_rows, k), dtype=a.dtype)
    cols_pad = np.zeros((tile_cols, k), dtype=a.dtype)
    last_rows = r1 - (r1 - r0) % tile_rows
    rows_pad[:r1 - last_rows] = a[last_rows:r1]
    last_cols = n1 - (n1 - n0) % tile_cols
    cols_pad[:n1 - last_cols] = w[last_cols:n1, :k]
    for c in range(n0, n1, tile_cols):
        width = min(tile_cols, n1 - c)
        cols, cols_off, ld = (w, c * ldw, ldw) if width == tile_cols else (cols_pad, 0, k)
        for r in range(r0, r1, tile_rows):
            count = min(tile_rows, r1 - r)
            rows, rows_off = (a, r * k) if count == tile_rows else (rows_pad, 0)
            full = count == tile_rows and width == tile_cols
            dst, dst_off, ldc = (out, r * n + c, n) if full else (tile, 0, tile_cols)
            if tile_rows == DOT:
                _dot_tile(rows, rows_off, k, cols, cols_off, ld, k, dst, dst_off, ldc)
            else:
                _dot_row(rows, rows_off, k, cols, cols_off, ld, k, dst, dst_off, ldc)
            if not full:
                out[r:r + count, c:c + width] = tile[:count, :width]
    _epilogue(out, r0, r1, n0, n1, scale, shift, residual, kind)


@kernel
def matmul_dot(a, w, out, scale, shift, residual, kind, row_block, col_group):
    """``out = act(a @ w.T * scale + shift) + residual`` with the dot tile; ``w`` [N, K] as stored (or
    [N, K + padding]: ``w[:, :K]`` is read).

    Tasks are blocks of ``row_block`` rows by groups of ``col_group`` columns (a multiple of DOT).
    """
    m = a.shape[0]
    n = w.shape[0]
    row_blocks = (m + row_block - 1) // row_block
    groups = (n + col_group - 1) // col_group
    for task in prange(row_blocks * groups):
        r0 = (task // groups) * row_block
        n0 = (task % groups) * col_group
        dot_block(a, w, out, scale, shift, residual, kind, r0, min(m, r0 + row_block), n0, min(n, n0 + col_group))


@kernel
def conv_dense(x, koff, b, out, scale, shift, kind, sh, sw, ph, pw, band, rows, unit):
    """Dense convolution as an implicit matrix product, epilogue fused: ``out[n, oy, ox] =
    act(sum_k X[n, oy*sh + ox*sw + tap k] * b[k] * scale + shift)`` with X the input zero-padded by
    ``ph`` rows and ``pw`` columns.

    ``x`` is the input, unpadded, as [N, P, H, W * unit]: NCHW as it is (P planes of single values)
    or channels-last as [N, 1, H, W * C] (one plane of ``unit`` = C values per pixel). ``out`` is
    [N, OH, OW, O] and ``b`` the transposed weight [K, O]. One task per image and band of ``band``
    output rows: it first copies the ``rows`` input rows the band reads, padded, into a small array
    of its own ([P, rows, (W + 2 * pw) * unit], in cache while the band's products read it) and
    ``koff`` holds each tap's offset in that copy, in the order of ``b``'s rows.
    """
    n_img, oh, ow, o = out.shape
    planes, h, width = x.shape[1], x.shape[2], x.shape[3]
    left = pw * unit
    padded_width = width + 2 * left
    k = b.shape[0]
    nr = 2 * VECTOR_BYTES // b.itemsize
    panels = (o + nr - 1) // nr
    bands = (oh + band - 1) // band
    no_residual = np.empty((0, 0), dtype=b.dtype)
    zero = ow - ow  # not a literal: the same compiled _epilogue as the matrix products
    for task in prange(n_img * bands):
        img, oy0 = task // bands, (task % bands) * band
        copy = np.empty(planes * rows * padded_width, dtype=b.dtype)
        for p in range(planes):
            for r in range(rows):
                start = (p * rows + r) * padded_width
                iy = oy0 * sh - ph + r
                if iy < 0 or iy >= h:
                    copy[start:start + padded_width] = 0
                else:
                    copy[start:start + left] = 0
                    copy[start + left:start + left + width] = x[img, p, iy]
                    copy[start + left + width:start + padded_width] = 0
        flat = out[img].reshape(-1)  # (once per task: numba reshapes through a call into its C helpers)
        for oy in range(oy0, min(oh, oy0 + band)):
            base = (oy - oy0) * sh * padded_width
            row = oy * ow * o
            if 2 * o <= nr:
                for ox in range(0, ow, NARROW_MR):
                    _gathered_tile_narrow(copy, base + ox * sw * unit, sw * unit, b, 0, o, k, flat, row + ox * o,
                                          o, min(NARROW_MR, ow - ox), o, koff, scale, shift, 0, kind)
            else:
                for ox in range(0, ow, MR):
                    for p in range(panels):
                        col = p * nr
                        _gathered_tile(copy, base + ox * sw * unit, sw * unit, b, col, o, k, flat,
                                       row + ox * o + col, o, min(MR, ow - ox), min(nr, o - col), koff, scale, shift,
                                       col, kind)
            _tile_epilogue(out[img, oy], zero, ow, zero, o, no_residual, kind)


@kernel
def matmul_at_b(a, b, partial, k_block):
    """``partial[t] = a[k-chunk t].T @ b[k-chunk t]`` for ``a`` [K, M], ``b`` [K, N] (C-contiguous): the
    weight gradient of a 1x1 convolution (K pixels), summed by the caller over the
    ``partial.shape[0]`` chunks of K: a fixed split, so results do not depend on the thread count.
    Each task sweeps blocks of ``k_block`` rows across all of its [M, N] tiles, each tile's
    registers adding a block's terms to ``partial[t]`` in place."""
    k, m = a.shape
    n = b.shape[1]
    nr = 2 * VECTOR_BYTES // a.itemsize
    chunks = partial.shape[0]
    per_chunk = (k + chunks - 1) // chunks
    for t in prange(chunks):
        dst = partial[t]
        dst[:, :] = 0
        flat = partial.reshape(-1)
        k0 = t * per_chunk
        k1 = min(k, k0 + per_chunk)
        for kb in range(k0, k1, k_block):
            steps = min(k_block, k1 - kb)
            for r in range(0, m, MR):
                rows = min(MR, m - r)
                for col in range(0, n, nr):
                    _columns_tile(a, kb * m + r, 1, b, kb * n + col, n, steps, flat, (t * m + r) * n + col, n,
                                  rows, min(nr, n - col), m)


@kernel
def gather_taps(xp, koff, rows, sn, sh, sw, oh, ow):
    """rows[m, t] = xp[n*sn + oy*sh + ox*sw + koff[t]] for output pixel m = (n, oy, ox): the im2col
    rows of a dense convolution's weight gradient, from the zero-padded input."""
    pixels, k = rows.shape
    per_image = oh * ow
    for m in prange(pixels):
        img, r = m // per_image, m % per_image
        base = img * sn + (r // ow) * sh + (r % ow) * sw
        row = rows[m]
        for t in range(k):
            row[t] = xp[base + koff[t]]
