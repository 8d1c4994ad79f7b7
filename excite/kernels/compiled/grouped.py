"""Compiled grouped convolutions (1 < groups < channels) on channels-last arrays: forward with the epilogue fused,
and the weight gradient.

Each group is a small dense convolution (RegNet's group widths run from 8 to 528 channels). Its
forward is the implicit matrix product of `gemm.conv_dense` restricted to the group: the taps of the
group's input channels are gathered from the zero-padded channels-last input (no im2col copy) by
the same broadcast micro-kernel, into the group's columns of the channels-last output; batch norm
and the activation then run on each finished output row. Sums run in a fixed order whatever the
thread count.
"""
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic

from .gemm import (MR, NARROW_MR, _columns_tile, _epilogue, _gathered_tile, _gathered_tile_half, _gathered_tile_narrow,
                   _tile_epilogue)
from .simd import VECTOR_BYTES, Vectors, as_i64, counted_loop, data_pointer, specialised
from ..threads import kernel

PACKED_ROWS = 12  # output pixels per packed tile: one vector of output channels each, 12 accumulators
PACKED_WIDTHS = (8, 16)  # group widths (in = out) with their own packed tile, where they divide a vector


def _packed_tile_intrinsic(width):
    """``tile(xp, x_off, ldx, toff, taps, b, b_off, out, o_off, ldo, rows, count)``: a vector of output
    channels holds lanes / ``width`` whole groups (group width ``width`` in and out):
    ``out[o_off + i*ldo + l] = sum over t < taps, ci < width of xp[x_off + i*ldx + toff[t] + (l // width)
    * width + ci] * b[b_off + (t * width + ci) * lanes + l]`` for pixels i < rows <= PACKED_ROWS and
    channels l < count.

    Where the broadcast tile would waste most lanes on narrow groups (a group of 8 fills a quarter of its
    two vectors), this one loads each pixel's input channels of all the vector's groups as one vector per
    tap and shuffles input channel ci of every group across that group's lanes. Lanes past ``count`` and
    rows past ``rows`` are neither read nor stored (masked; rows repeat the last one)."""

    def codegen(context, builder, signature, args):
        v = Vectors(context, builder, signature.args[0].dtype)
        x_data = data_pointer(context, builder, signature.args[0], args[0], "xp")
        toff_data = data_pointer(context, builder, signature.args[3], args[3], "toff")
        b_data = data_pointer(context, builder, signature.args[5], args[5], "b")
        o_data = data_pointer(context, builder, signature.args[7], args[7], "out")
        x_off, ldx, taps, b_off, o_off, ldo, rows, count = as_i64(builder, args[1:3] + args[4:5] + args[6:7]
                                                                  + args[8:12])
        last = builder.sub(rows, v.const(1))
        x_rows, o_rows = [], []
        for i in range(PACKED_ROWS):
            row = builder.select(builder.icmp_signed("<", v.const(i), rows), v.const(i), last)
            x_rows.append(v.at(x_data, builder.add(x_off, builder.mul(row, ldx))))
            o_rows.append(v.at(o_data, builder.add(o_off, builder.mul(v.const(i), ldo))))
        b_base = v.at(b_data, b_off)
        mask = v.lanes_below(count)
        none = ir.Constant(mask.type, [0] * v.lanes)
        spread = [[(lane // width) * width + ci for lane in range(v.lanes)] for ci in range(width)]

        def emit(masked):
            def step(t, accs):
                offset = as_i64(builder, [v.load_scalar(toff_data, t)])[0]
                xs = [v.load_first(row, offset, mask) if masked else v.load(row, offset) for row in x_rows]
                b_tap = v.at(b_base, builder.mul(t, v.const(width * v.lanes)))
                for ci in range(width):
                    b_vec = v.load(b_tap, ci * v.lanes)
                    accs = [v.fma(v.shuffle(x, x, spread[ci]), b_vec, acc) for x, acc in zip(xs, accs)]
                return accs

            final = counted_loop(builder, taps, [v.zero] * PACKED_ROWS, step, "masked" if masked else "packed")
            for i in range(PACKED_ROWS):
                if masked:
                    row_mask = builder.select(builder.icmp_signed("<", v.const(i), rows), mask, none)
                    v.store_masked(final[i], o_rows[i], 0, row_mask)
                else:
                    v.store(final[i], o_rows[i], 0)

        full = builder.and_(builder.icmp_signed("==", rows, v.const(PACKED_ROWS)),
                            builder.icmp_signed("==", count, v.const(v.lanes)))
        specialised(builder, full, lambda plain: emit(not plain))
        return context.get_dummy_value()

    @intrinsic
    def tile(typingctx, xp, x_off, ldx, toff, taps, b, b_off, out, o_off, ldo, rows, count):
        return types.void(xp, x_off, ldx, toff, taps, b, b_off, out, o_off, ldo, rows, count), codegen

    return tile


_packed_8 = _packed_tile_intrinsic(8)
_packed_16 = _packed_tile_intrinsic(16)


@kernel
def grouped_forward_packed(xp, toff, b, out, scale, shift, kind, sn, sh, sw, width):
    """The grouped forward for groups of ``width`` (8 or 16, dividing a vector) input and output channels:
    ``b`` [blocks, taps, width, lanes] holds the weights of each vector of output channels (zeros past the
    last channel), ``toff`` the spatial offset of each tap in the zero-padded channels-last ``xp``; the
    rest as `grouped_forward`. One task per output row."""
    n_img, oh, ow, o = out.shape
    blocks, taps = b.shape[0], b.shape[1]
    lanes = b.shape[3]
    flat_b = b.reshape(-1)
    no_residual = np.empty((0, 0), dtype=b.dtype)
    zero = ow - ow
    for task in prange(n_img * oh):
        img, oy = task // oh, task % oh
        dst = out[img, oy]
        flat_dst = dst.reshape(-1)
        base = img * sn + oy * sh
        for p in range(blocks):
            count = min(lanes, o - p * lanes)
            for ox in range(0, ow, PACKED_ROWS):
                if width == 8:
                    _packed_8(xp, base + ox * sw + p * lanes, sw, toff, taps, flat_b, p * taps * width * lanes,
                              flat_dst, ox * o + p * lanes, o, min(PACKED_ROWS, ow - ox), count)
                else:
                    _packed_16(xp, base + ox * sw + p * lanes, sw, toff, taps, flat_b, p * taps * width * lanes,
                               flat_dst, ox * o + p * lanes, o, min(PACKED_ROWS, ow - ox), count)
        _epilogue(dst, zero, ow, zero, o, scale, shift, no_residual, kind)


def _packed_gradient_intrinsic(width, taps):
    """``tile(xp, x_off, ldx, toff, t0, grad, g_off, ldg, pixels, acc, a_off, count)``: the weight gradient
    of ``taps`` taps (t0 ..) of packed groups of ``width`` channels in and out, over a run of ``pixels``
    output pixels (one output row):
    ``acc[a_off + (t * width + oo) * lanes + l] += sum over i < pixels of grad[g_off + i*ldg + (l // width)
    * width + oo] * xp[x_off + i*ldx + toff[t0 + t] + l]`` for lanes l < count (input channel l % width of
    group l // width; output channel oo of that group).

    Per pixel, the gradient vector is spread once into ``width`` vectors (output channel oo of each group
    across the group's lanes) and reused for every tap; each tap is then one load of the input and
    ``width`` fused multiply-adds. Lanes past ``count`` are neither read nor stored."""

    def codegen(context, builder, signature, args):
        v = Vectors(context, builder, signature.args[0].dtype)
        x_data = data_pointer(context, builder, signature.args[0], args[0], "xp")
        toff_data = data_pointer(context, builder, signature.args[3], args[3], "toff")
        g_data = data_pointer(context, builder, signature.args[5], args[5], "grad")
        a_data = data_pointer(context, builder, signature.args[9], args[9], "acc")
        x_off, ldx, t0, g_off, ldg, pixels, a_off, count = as_i64(builder, args[1:3] + args[4:5] + args[6:9]
                                                                  + args[10:12])
        mask = v.lanes_below(count)
        spread = [[(lane // width) * width + oo for lane in range(v.lanes)] for oo in range(width)]
        offsets = [as_i64(builder, [v.load_scalar(toff_data, builder.add(t0, v.const(t)))])[0] for t in range(taps)]
        x_taps = [v.at(x_data, builder.add(x_off, off)) for off in offsets]
        g_base = v.at(g_data, g_off)
        a_base = v.at(a_data, a_off)

        def emit(masked):
            def load(base, offset):
                return v.load_first(base, offset, mask) if masked else v.load(base, offset)

            def step(i, accs):
                dy = load(g_base, builder.mul(i, ldg))
                dys = [v.shuffle(dy, dy, spread[oo]) for oo in range(width)]
                x_at = builder.mul(i, ldx)
                out = []
                for t in range(taps):
                    x = load(x_taps[t], x_at)
                    out += [v.fma(dys[oo], x, accs[t * width + oo]) for oo in range(width)]
                return out

            start = [load(a_base, j * v.lanes) for j in range(taps * width)]
            final = counted_loop(builder, pixels, start, step, "masked" if masked else "packed_grad")
            for j, value in enumerate(final):
                if masked:
                    v.store_masked(value, a_base, j * v.lanes, mask)
                else:
                    v.store(value, a_base, j * v.lanes)

        specialised(builder, builder.icmp_signed("==", count, v.const(v.lanes)), lambda plain: emit(not plain))
        return context.get_dummy_value()

    @intrinsic
    def tile(typingctx, xp, x_off, ldx, toff, t0, grad, g_off, ldg, pixels, acc, a_off, count):
        return types.void(xp, x_off, ldx, toff, t0, grad, g_off, ldg, pixels, acc, a_off, count), codegen

    return tile


GRADIENT_TAPS_8 = 3  # taps per pass for groups of 8: 24 accumulators and 8 spread gradient vectors
_packed_gradient_8 = _packed_gradient_intrinsic(8, GRADIENT_TAPS_8)
_packed_gradient_8_one = _packed_gradient_intrinsic(8, 1)
_packed_gradient_16 = _packed_gradient_intrinsic(16, 1)


@kernel
def grouped_weight_gradient_packed(xp, toff, grad, partial, sn, sh, sw, oh, ow):
    """The weight gradient for packed groups (`grouped_forward_packed`), read straight from the zero-padded
    channels-last ``xp`` (no gathered copy): ``partial[t, p, tap, oo, l]`` = the sum over the output rows
    of chunk t of ``grad[pixel, p*lanes + (l // width)*width + oo] * xp[pixel's offset + toff[tap] +
    p*lanes + l]``; ``grad`` [P, O] the output gradient's pixel rows, ``partial`` [chunks, blocks, taps,
    width, lanes]. The caller sums the fixed chunks (a split that does not depend on the thread count).
    One task per chunk and vector block of channels."""
    chunks, blocks, taps, width, lanes = partial.shape
    o = grad.shape[1]
    out_rows = grad.shape[0] // ow
    per_chunk = (out_rows + chunks - 1) // chunks
    flat_grad = grad.reshape(-1)
    flat_partial = partial.reshape(-1)
    for task in prange(chunks * blocks):
        t, p = task // blocks, task % blocks
        partial[t, p] = 0
        count = min(lanes, o - p * lanes)
        a_base = (t * blocks + p) * taps * width * lanes
        for row in range(t * per_chunk, min(out_rows, (t + 1) * per_chunk)):
            img, oy = row // oh, row % oh
            base = img * sn + oy * sh + p * lanes
            g_off = row * ow * o + p * lanes
            tap = 0
            while tap < taps:
                a_off = a_base + tap * width * lanes
                if width == 8 and taps - tap >= GRADIENT_TAPS_8:
                    _packed_gradient_8(xp, base, sw, toff, tap, flat_grad, g_off, o, ow, flat_partial, a_off, count)
                    tap += GRADIENT_TAPS_8
                elif width == 8:
                    _packed_gradient_8_one(xp, base, sw, toff, tap, flat_grad, g_off, o, ow, flat_partial, a_off,
                                           count)
                    tap += 1
                else:
                    _packed_gradient_16(xp, base, sw, toff, tap, flat_grad, g_off, o, ow, flat_partial, a_off, count)
                    tap += 1


@kernel
def grouped_forward(xp, koff, b, out, scale, shift, kind, sn, sh, sw, cg):
    """``out[n, oy, ox, g*og + j] = act(sum_k xp[n*sn + oy*sh + ox*sw + g*cg + koff[k]] * b[g, k, j]
    * scale + shift)``.

    ``xp`` is the zero-padded channels-last input, flat; ``sn`` / ``sh`` / ``sw`` are the element
    offsets of one image / output row / output column (strides included); ``koff`` [K] the offsets of
    one group's taps (input channel, kernel row, kernel column order: the weight's), ``cg`` the input
    channels per group; ``b`` [G, K, og] each group's transposed weight; ``out`` [N, OH, OW, G*og].
    One task per output row; within it each panel of a group's weight is swept across the whole row.
    """
    n_img, oh, ow, o = out.shape
    groups, k, og = b.shape
    nr = 2 * VECTOR_BYTES // b.itemsize
    flat_b = b.reshape(-1)
    no_residual = np.empty((0, 0), dtype=b.dtype)
    zero = ow - ow  # not a literal: the same compiled _epilogue as the matrix products
    for task in prange(n_img * oh):
        img, oy = task // oh, task % oh
        dst = out[img, oy]
        flat_dst = dst.reshape(-1)
        base = img * sn + oy * sh
        for g in range(groups):
            if 4 * og <= nr:
                for ox in range(0, ow, NARROW_MR):
                    _gathered_tile_half(xp, base + ox * sw + g * cg, sw, flat_b, (g * k) * og, og, k, flat_dst,
                                        ox * o + g * og, o, min(NARROW_MR, ow - ox), og, koff, scale, shift, g * og, kind)
                continue
            if 2 * og <= nr:
                for ox in range(0, ow, NARROW_MR):
                    _gathered_tile_narrow(xp, base + ox * sw + g * cg, sw, flat_b, (g * k) * og, og, k, flat_dst,
                                          ox * o + g * og, o, min(NARROW_MR, ow - ox), og, koff, scale, shift, g * og, kind)
                continue
            for col in range(0, og, nr):
                width = min(nr, og - col)
                for ox in range(0, ow, MR):
                    _gathered_tile(xp, base + ox * sw + g * cg, sw, flat_b, (g * k) * og + col, og, k, flat_dst,
                                   ox * o + g * og + col, o, min(MR, ow - ox), width, koff, scale, shift,
                                   g * og + col, kind)
        _tile_epilogue(dst, zero, ow, zero, o, no_residual, kind)


@kernel
def grouped_weight_gradient(grad, rows, partial, k_block):
    """``partial[t, g] = grad[pixels of chunk t, g's outputs].T @ rows[pixels of chunk t, g's taps]``.

    ``grad`` [P, G*og] is the output gradient's pixel rows, ``rows`` [P, G*K] the gathered taps of
    every pixel (group-major), ``partial`` [chunks, G, og, K]: the caller sums the fixed chunks of
    pixels (a split that does not depend on the thread count). Each task (a chunk and a group)
    sweeps blocks of ``k_block`` pixels across its tiles, adding to ``partial`` in place.
    """
    pixels, o = grad.shape
    chunks, groups, og, k = partial.shape
    gk = rows.shape[1]
    nr = 2 * VECTOR_BYTES // grad.itemsize
    per_chunk = (pixels + chunks - 1) // chunks
    flat_grad = grad.reshape(-1)
    flat_rows = rows.reshape(-1)
    flat_partial = partial.reshape(-1)
    for task in prange(chunks * groups):
        t, g = task // groups, task % groups
        dst = partial[t, g]
        dst[:, :] = 0
        p0 = t * per_chunk
        p1 = min(pixels, p0 + per_chunk)
        for pb in range(p0, p1, k_block):
            steps = min(k_block, p1 - pb)
            for r in range(0, og, MR):
                count = min(MR, og - r)
                for col in range(0, k, nr):
                    _columns_tile(flat_grad, pb * o + g * og + r, 1, flat_rows, pb * gk + g * k + col, gk, steps,
                                  flat_partial, ((t * groups + g) * og + r) * k + col, k, count, min(nr, k - col), o)


@kernel
def gather_group_taps(xp, koff, rows, sn, sh, sw, oh, ow, cg):
    """rows[m, g*K + t] = xp[n*sn + oy*sh + ox*sw + g*cg + koff[t]] for output pixel m = (n, oy, ox):
    the im2col rows of a grouped convolution's weight gradient, group-major."""
    pixels, gk = rows.shape
    k = koff.shape[0]
    groups = gk // k
    per_image = oh * ow
    for m in prange(pixels):
        img, r = m // per_image, m % per_image
        base = img * sn + (r // ow) * sh + (r % ow) * sw
        row = rows[m]
        for g in range(groups):
            start = base + g * cg
            for t in range(k):
                row[g * k + t] = xp[start + koff[t]]
