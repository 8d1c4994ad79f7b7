"""Compiled depthwise conv2d on channels-last arrays [N, H, W, C]: forward and backward.

Channels are the innermost (vectorised) loop everywhere; weights come as [KH, KW, C]. No
fastmath: sums are plain adds in a fixed order, so results do not depend on the thread count.
"""
import numpy as np
from llvmlite import ir
from numba import prange, types
from numba.extending import intrinsic

from .activation_math import VECTOR_KINDS, activated_in_tile, emit_activation
from .elementwise import epilogue_rows
from ..activations import IDENTITY
from .simd import VECTOR_BYTES, Vectors, as_i64, data_pointer, only_if, specialised, switch_values
from ..threads import helper, inline_helper, kernel


@helper
def _columns(off, stride, out_w, in_w):
    """Output columns ox whose input column ox * stride + off lies inside [0, in_w)."""
    lo = max(0, -(off // stride))
    hi = min(out_w, (in_w - 1 - off) // stride + 1)
    return lo, hi


@helper
def _madd(acc, a, b):
    for c in range(acc.shape[0]):
        acc[c] += a[c] * b[c]


PIXELS = 8  # output pixels per micro-kernel call (one accumulator vector each)


def _row_intrinsic(kh, kw, stride):
    """``row(x, x_off, ld, dh, ch, w, w_off, bias, out, o_off, pixels, count, row_bits, col_bits, scale, shift,
    affine, kind)``: ``pixels`` <= PIXELS consecutive output pixels of one output row, ``count`` <= one
    vector of channels, read straight from the input (no padded copy): ``out[o_off + p*ch + c] =
    act(S * scale[w_off + c] + shift[w_off + c])`` (the affine map only where ``affine`` is nonzero;
    ``act`` the activation ``kind``, one of `activation_math.VECTOR_KINDS`), with ``S = bias[w_off + c]
    + sum_ij w[w_off + (i*kw + j)*ch + c] * x[x_off + i*dh*ld + (p*stride + j)*ch + c]``, where the
    taps of kernel row i count only if bit i of ``row_bits`` is set and input column p*stride + j
    only if that bit of ``col_bits`` is (the zero padding: nothing outside is read; with all bits
    set, every column is read, including those of pixels past ``pixels``). The taps and pixels
    unroll (kh, kw and the stride are constants); each input column of a kernel row is loaded
    once and reaches every accumulator that uses it. The epilogue runs on the accumulators, as the
    scalar one does (a multiply, then an add), before the one store."""
    columns = (PIXELS - 1) * stride + kw

    def codegen(context, builder, signature, args):
        v = Vectors(context, builder, signature.args[0].dtype)
        x = data_pointer(context, builder, signature.args[0], args[0], "x")
        w = data_pointer(context, builder, signature.args[5], args[5], "w")
        bias = data_pointer(context, builder, signature.args[7], args[7], "bias")
        out = data_pointer(context, builder, signature.args[8], args[8], "out")
        scale = data_pointer(context, builder, signature.args[14], args[14], "scale")
        shift = data_pointer(context, builder, signature.args[15], args[15], "shift")
        x_off, ld, dh, ch, w_off, o_off, pixels, count, row_bits, col_bits, affine, kind = as_i64(
            builder, args[1:5] + args[6:7] + args[9:14] + args[16:18])
        mask = v.lanes_below(count)
        none = ir.Constant(mask.type, [0] * v.lanes)

        def bit(bits, i):
            return builder.icmp_signed("!=", builder.and_(bits, v.const(1 << i)), v.const(0))

        def emit(plain):
            def load(base, offset, valid=None):
                if plain:
                    return v.load(base, offset)
                return v.load_first(base, offset, mask if valid is None else builder.select(valid, mask, none))

            def kernel_row(i, accs):
                row = v.at(x, builder.add(x_off, builder.mul(builder.mul(v.const(i), dh), ld)))
                weights = [load(v.at(w, w_off), builder.mul(v.const(i * kw + j), ch)) for j in range(kw)]
                inputs = [load(row, builder.mul(v.const(col), ch), None if plain else bit(col_bits, col))
                          for col in range(columns)]
                accs = list(accs)
                for p in range(PIXELS):
                    for j in range(kw):
                        accs[p] = v.fma(weights[j], inputs[p * stride + j], accs[p])
                return accs

            accs = [load(v.at(bias, w_off), 0)] * PIXELS
            for i in range(kh):
                if plain:
                    accs = kernel_row(i, accs)
                    continue
                # rows outside the image add nothing
                accs = only_if(builder, bit(row_bits, i), accs, lambda values, i=i: kernel_row(i, values))

            def affine_map(values):  # the loads only here: without the map, scale and shift may be empty
                factor, term = load(v.at(scale, w_off), 0), load(v.at(shift, w_off), 0)
                return [builder.fadd(builder.fmul(value, factor), term) for value in values]

            accs = only_if(builder, builder.icmp_signed("!=", affine, v.const(0)), accs, affine_map)
            accs = switch_values(builder, kind, accs, {
                code: (lambda values, code=code: [emit_activation(builder, code, value) for value in values])
                for code in VECTOR_KINDS if code != IDENTITY})
            for p in range(PIXELS):
                target = v.at(out, builder.add(o_off, builder.mul(v.const(p), ch)))
                if plain:
                    v.store(accs[p], target, 0)
                else:
                    keep = builder.icmp_signed("<", v.const(p), pixels)
                    v.store_masked(accs[p], target, 0, builder.select(keep, mask, none))

        # whole tiles (every tap inside the image, all pixels, a full vector of
        # channels) take plain loads and stores; the others mask them (two bodies, not three: each
        # one more is compile time on the first run)
        inside = builder.and_(builder.and_(builder.icmp_signed("==", row_bits, v.const((1 << kh) - 1)),
                                           builder.icmp_signed("==", col_bits, v.const((1 << columns) - 1))),
                              builder.icmp_signed("==", count, v.const(v.lanes)))
        whole = builder.and_(inside, builder.icmp_signed("==", pixels, v.const(PIXELS)))
        specialised(builder, whole, emit)
        return context.get_dummy_value()

    @intrinsic
    def row(typingctx, x, x_off, ld, dh, ch, w, w_off, bias, out, o_off, pixels, count, row_bits, col_bits, scale,
            shift, affine, kind):
        sig = types.void(x, x_off, ld, dh, ch, w, w_off, bias, out, o_off, pixels, count, row_bits, col_bits, scale,
                         shift, affine, kind)
        return sig, codegen

    return row


_row_3x3_s1 = _row_intrinsic(3, 3, 1)
_row_3x3_s2 = _row_intrinsic(3, 3, 2)
_row_5x5_s1 = _row_intrinsic(5, 5, 1)
_row_5x5_s2 = _row_intrinsic(5, 5, 2)


@inline_helper
def _valid_bits(first, count, size, step):
    """Bit t set for t < count when first + t * step lies inside [0, size): the run of bits lo..hi (a
    closed form; a loop over the bits cost a fifth of a 16-channel tile)."""
    lo = min(count, max(0, (step - 1 - first) // step))
    hi = min(count, max(0, (size - first + step - 1) // step))
    return ((1 << hi) - 1) ^ ((1 << lo) - 1) if hi > lo else 0


@inline_helper
def _simd_rows(x, n, oy0, w, bias, out_rows, sh, sw, ph, pw, dh, kh, scale, shift, kind):
    """Output rows oy0.. of image n with the SIMD row kernels (3x3 or 5x5 taps, column stride 1 or
    2, no column dilation); the epilogue in the row kernels' registers where they have the activation
    (`activation_math.VECTOR_KINDS`), else on each row while it is in L1. The taps are read straight
    from x, the border tiles masking their loads: even where nearly every tile touches the border
    (7x7 images), that beats copying each band's rows, halo included, into a zero-padded buffer
    (960 channels 7x7 5x5: 31 us against 54; 480 channels 14x14 3x3: 38 against 44)."""
    h, wd, ch = x.shape[1], x.shape[2], x.shape[3]
    ow = out_rows.shape[1]
    rows_out = out_rows.shape[0]
    lanes = VECTOR_BYTES // x.itemsize
    columns = (PIXELS - 1) * sw + kh
    src = x[n].reshape(-1)
    ld = wd * ch
    src_row0, src_col0 = oy0 * sh - ph, -pw
    flat_w = w.reshape(-1)
    flat_out = out_rows.reshape(-1)  # (once: numba reshapes through a call into its C helpers)
    in_tile = activated_in_tile(kind)
    affine = 1 if in_tile and scale.size else 0
    tile_kind = kind if in_tile else IDENTITY
    epilogue = not in_tile and (scale.size or kind != IDENTITY)
    for y in range(rows_out):
        iy0 = src_row0 + y * sh
        row_bits = _valid_bits(iy0, kh, h, dh)
        for ox in range(0, ow, PIXELS):
            pixels = min(PIXELS, ow - ox)
            ix0 = src_col0 + ox * sw
            col_bits = _valid_bits(ix0, columns, wd, 1)
            for c0 in range(0, ch, lanes):
                count = min(lanes, ch - c0)
                x_off = iy0 * ld + ix0 * ch + c0
                o_off = (y * ow + ox) * ch + c0
                if kh == 3 and sw == 1:
                    _row_3x3_s1(src, x_off, ld, dh, ch, flat_w, c0, bias, flat_out, o_off, pixels, count,
                                row_bits, col_bits, scale, shift, affine, tile_kind)
                elif kh == 3:
                    _row_3x3_s2(src, x_off, ld, dh, ch, flat_w, c0, bias, flat_out, o_off, pixels, count,
                                row_bits, col_bits, scale, shift, affine, tile_kind)
                elif sw == 1:
                    _row_5x5_s1(src, x_off, ld, dh, ch, flat_w, c0, bias, flat_out, o_off, pixels, count,
                                row_bits, col_bits, scale, shift, affine, tile_kind)
                else:
                    _row_5x5_s2(src, x_off, ld, dh, ch, flat_w, c0, bias, flat_out, o_off, pixels, count,
                                row_bits, col_bits, scale, shift, affine, tile_kind)
        if epilogue:
            epilogue_rows(out_rows[y], scale, shift, kind)


@inline_helper
def _direct_rows(x, n, oy0, w, bias, out_rows, sh, sw, ph, pw, dh, dw):
    """Any kernel size: per tap, a multiply-add over the output row (no padded copy)."""
    h, wd = x.shape[1], x.shape[2]
    kh, kw = w.shape[0], w.shape[1]
    ow = out_rows.shape[1]
    for y in range(out_rows.shape[0]):
        oy = oy0 + y
        acc = out_rows[y]
        for ox in range(ow):
            acc[ox, :] = bias
        for i in range(kh):
            iy = oy * sh - ph + i * dh
            if iy < 0 or iy >= h:
                continue
            xrow = x[n, iy]
            for j in range(kw):
                off = j * dw - pw
                lo, hi = _columns(off, sw, ow, wd)
                wv = w[i, j]
                for ox in range(lo, hi):
                    _madd(acc[ox], wv, xrow[ox * sw + off])


@inline_helper
def _forward_task(x, w, bias, scale, shift, kind, out, sh, sw, ph, pw, dh, dw, n, oy0, oy1):
    """Output rows oy0..oy1 of image n."""
    kh, kw = w.shape[0], w.shape[1]
    wd, ch = x.shape[2], x.shape[3]
    ow = out.shape[2]
    rows = out[n, oy0:oy1]
    if ((kh == 3 and kw == 3) or (kh == 5 and kw == 5)) and sw <= 2 and dw == 1:
        _simd_rows(x, n, oy0, w, bias, rows, sh, sw, ph, pw, dh, kh, scale, shift, kind)
    else:
        _direct_rows(x, n, oy0, w, bias, rows, sh, sw, ph, pw, dh, dw)
        if scale.size or kind != IDENTITY:
            for y in range(oy1 - oy0):
                epilogue_rows(out[n, oy0 + y], scale, shift, kind)


@kernel
def depthwise_forward_cl(x, w, bias, scale, shift, kind, out, sh, sw, ph, pw, dh, dw, band):
    """out[n, oy, ox, c] = act(conv * scale[c] + shift[c]) where conv = bias[c] + sum_ij w[i, j, c] * x[...].

    ``x[n, oy*sh - ph + i*dh, ox*sw - pw + j*dw, c]`` is the tap (zero outside); ``scale`` and
    ``shift`` (batch norm's affine map, folded into the epilogue) have C values, or none to skip
    the map. Tasks are bands of ``band`` output rows of one image; every output is
    computed the same way whatever the banding. 3x3 and 5x5 kernels (column stride 1 or 2, no
    column dilation) run the SIMD row kernels; other shapes accumulate tap by tap.
    """
    oh = out.shape[1]
    bands = (oh + band - 1) // band
    for t in prange(x.shape[0] * bands):
        oy0 = (t % bands) * band
        _forward_task(x, w, bias, scale, shift, kind, out, sh, sw, ph, pw, dh, dw, t // bands, oy0,
                      min(oh, oy0 + band))


@kernel
def depthwise_backward_input_cl(grad, w, grad_x, sh, sw, ph, pw, dh, dw):
    """grad_x[n, iy, ix, c] = sum over the taps and outputs that read x[n, iy, ix, c]."""
    n_img, h, wd, ch = grad_x.shape
    kh, kw = w.shape[0], w.shape[1]
    oh, ow = grad.shape[1], grad.shape[2]
    for p in prange(n_img * h):
        n = p // h
        iy = p % h
        acc = grad_x[n, iy]
        acc[:, :] = 0
        for i in range(kh):
            t = iy + ph - i * dh
            if t < 0 or t % sh:
                continue
            oy = t // sh
            if oy >= oh:
                continue
            grow = grad[n, oy]
            for j in range(kw):
                off = j * dw - pw
                lo, hi = _columns(off, sw, ow, wd)
                wv = w[i, j]
                for ox in range(lo, hi):
                    _madd(acc[ox * sw + off], wv, grow[ox])


@inline_helper
def _dot_columns(acc, grow, xrow, lo, hi, sw, off):
    """acc[c] += sum over ox in [lo, hi) of grow[ox, c] * xrow[ox * sw + off, c], four columns at a
    time (one accumulator load / store per four products)."""
    ch = acc.shape[0]
    ox = lo
    while ox + 4 <= hi:
        x0 = ox * sw + off
        for c in range(ch):
            acc[c] += (grow[ox, c] * xrow[x0, c] + grow[ox + 1, c] * xrow[x0 + sw, c]
                       + grow[ox + 2, c] * xrow[x0 + 2 * sw, c] + grow[ox + 3, c] * xrow[x0 + 3 * sw, c])
        ox += 4
    while ox < hi:
        _madd(acc, grow[ox], xrow[ox * sw + off])
        ox += 1


@kernel
def depthwise_backward_weight_cl(grad, x, partial, sh, sw, ph, pw, dh, dw):
    """partial[n, i, j, c] = sum over outputs of image n of grad * the input tap (float64 totals)."""
    n_img, h, wd, ch = x.shape
    kh, kw = partial.shape[1], partial.shape[2]
    oh, ow = grad.shape[1], grad.shape[2]
    for n in prange(n_img):
        row_sum = np.empty((kh, kw, ch), dtype=x.dtype)
        total = partial[n]
        total[:, :, :] = 0
        for oy in range(oh):
            row_sum[:, :, :] = 0
            grow = grad[n, oy]
            for i in range(kh):
                iy = oy * sh - ph + i * dh
                if iy < 0 or iy >= h:
                    continue
                xrow = x[n, iy]
                for j in range(kw):
                    off = j * dw - pw
                    lo, hi = _columns(off, sw, ow, wd)
                    _dot_columns(row_sum[i, j], grow, xrow, lo, hi, sw, off)
            for i in range(kh):
                for j in range(kw):
                    for c in range(ch):
                        total[i, j, c] += row_sum[i, j, c]
