"""The compiled kernels stay inside their arrays (issue 14 B), on odd shapes.

Every kernel family runs on inputs and outputs placed inside NaN-filled margins: sizes that are not
multiples of a vector (16 float32 / 8 float64 lanes), 1x1 images, kernels larger than the padded
image, batch 1 and odd batches. The margins must stay bitwise untouched, no NaN may leak into the
results (outputs start as NaN, so an element a kernel never writes shows too), and the results must
match a float64 reference. Each family's broken calling convention must be caught: here by a damaged
margin or a NaN, under EXCITE_KERNEL_BOUNDSCHECK=1 by an IndexError. The last test runs this file
again in a subprocess with that variable set (`excite.kernels.bounds`), where every vector, masked
and scalar access of the SIMD tiles and every index of the plain loops is checked.

Budget: a few seconds with a warm numba cache. The checked subprocess compiles its own kernels on
its first run (about 50 s of CPU time; they are cached under names of their own), a few seconds after.
"""
import os
import subprocess
import sys

import numpy as np
import pytest

from excite.kernels import activations, bounds, buffers, threads
from excite.kernels import conv as K
from excite.kernels import conv_dense
from excite.kernels import pointwise
from excite.kernels.compiled import batchnorm, channel_reduce, depthwise_cl, elementwise, gemm, grouped
from excite.kernels.compiled.activation_math import grad_code
from oracle import REFERENCE_ACTIVATIONS, assert_close, away_from
from test_kernels_conv import reference_conv2d, reference_conv2d_backward
from test_kernels_threads import digest, workload

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
MARGIN = 67  # elements each side of every array: more than a vector, and odd (arrays start unaligned)
# a NaN no arithmetic produces (a payload), so a margin that is still this bit pattern was never written
MARGIN_BITS = {4: np.uint32(0x7FC0BEEF), 8: np.uint64(0x7FF800000000BEEF)}
UINT = {4: np.uint32, 8: np.uint64}
TOL = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-10, atol=1e-10)}
DTYPES = pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
ACTIVATION = "hardswish"  # the epilogue's activation (every code is compiled in anyway)


class Guard:
    """Arrays inside NaN-filled buffers (integer arrays: zero-filled); `intact` says whether every
    margin still holds exactly what was put there."""

    def __init__(self):
        self._buffers = []

    def nan(self, shape, dtype):
        """An output: a C-contiguous NaN-filled array of ``shape`` inside a margin."""
        dtype = np.dtype(dtype)
        size = int(np.prod(shape))
        if dtype.kind == "f":
            buf = np.full(size + 2 * MARGIN, MARGIN_BITS[dtype.itemsize], UINT[dtype.itemsize]).view(dtype)
        else:
            buf = np.zeros(size + 2 * MARGIN, dtype)
        self._buffers.append((buf, size))
        return buf[MARGIN:MARGIN + size].reshape(shape)

    def place(self, values, dtype=None):
        """An input: a C-contiguous copy of ``values`` inside a margin."""
        values = np.asarray(values)
        out = self.nan(values.shape, dtype or values.dtype)
        out[...] = values
        return out

    def intact(self):
        for buf, size in self._buffers:
            bits = buf.view(UINT[buf.itemsize]) if buf.dtype.kind == "f" else buf
            expected = MARGIN_BITS[buf.itemsize] if buf.dtype.kind == "f" else 0
            if not ((bits[:MARGIN] == expected).all() and (bits[MARGIN + size:] == expected).all()):
                return False
        return True

    def check(self, *outputs, what="output"):
        assert self.intact(), f"{what}: a kernel wrote into the margin around one of its arrays"
        for out in outputs:
            assert not np.isnan(out).any(), f"{what}: NaN in the result (read outside an array or an unwritten output)"


def _rng(*seed):
    return np.random.default_rng(seed)


def _activation_reference(z, name=ACTIVATION):
    return REFERENCE_ACTIVATIONS[name](z)


# ----- the 1x1 products: both micro-kernels, masked edges, residual -------------------------------
# (M, K, N): one row (the dot kernel's row tile), fewer rows than a tile, depths and widths off the
# vector width, exact tiles (MR = 6 rows, a 32 / 16 column panel), a matrix-vector product
PRODUCTS = [(1, 1, 1), (1, 17, 33), (3, 5, 2), (5, 19, 40), (6, 16, 32), (12, 8, 16), (13, 31, 47), (49, 40, 17)]


@DTYPES
@pytest.mark.parametrize("shape", PRODUCTS, ids=lambda s: "x".join(map(str, s)))
def test_matrix_product_tiles_stay_inside_their_arrays(shape, dtype):
    m, k, n = shape
    rng = _rng(m, k, n)
    a, w = rng.standard_normal((m, k)), rng.standard_normal((n, k))
    scale, shift, residual = rng.uniform(0.5, 1.5, n), rng.standard_normal(n), rng.standard_normal((m, n))
    kind = activations.code(ACTIVATION)
    for with_residual in (True, False):
        expected = _activation_reference((a @ w.T) * scale + shift) + (residual if with_residual else 0)
        operands = {"broadcast": w.T, "broadcast, weight in panels": pointwise.packed_panels(w, dtype), "dot": w}
        for run, operand in operands.items():
            for row_block, group in ((1, 1), (7, 2), (m, 1000)):
                g = Guard()
                args = [g.place(v, dtype) for v in (a, operand)]
                out = g.nan((m, n), dtype)
                res = g.place(residual, dtype) if with_residual else g.nan((0, 0), dtype)
                kernel = gemm.matmul_dot if run == "dot" else gemm.matmul_broadcast
                kernel(*args, out, g.place(scale, dtype), g.place(shift, dtype), res, kind, row_block,
                       group * gemm.DOT if run == "dot" else group)
                what = f"{run} {shape} residual={with_residual} blocks {row_block}x{group}"
                g.check(out, what=what)
                assert_close(out, expected, what, **TOL[dtype])
        g = Guard()  # the dispatch, which picks the kernel and writes into the given out
        out = g.nan((m, n), dtype)
        pointwise.pointwise(g.place(a, dtype), g.place(w, dtype), g.place(scale, dtype), g.place(shift, dtype),
                            ACTIVATION, g.place(residual, dtype) if with_residual else None, out=out)
        g.check(out, what=f"pointwise {shape}")
        assert_close(out, expected, f"pointwise {shape}", **TOL[dtype])


@DTYPES
@pytest.mark.parametrize("shape", [(1, 1, 1), (7, 3, 17), (70, 33, 5), (200, 17, 40)], ids=lambda s: "x".join(map(str, s)))
def test_matmul_at_b_stays_inside_its_arrays(shape, dtype):
    k, m, n = shape
    rng = _rng(k, m, n)
    a, b = rng.standard_normal((k, m)), rng.standard_normal((k, n))
    for chunks, k_block in ((1, 6), (3, 7), (8, 1000)):
        g = Guard()
        partial = g.nan((chunks, m, n), dtype)
        gemm.matmul_at_b(g.place(a, dtype), g.place(b, dtype), partial, k_block)
        g.check(partial, what=f"matmul_at_b {shape} chunks {chunks}")
        assert_close(partial.sum(axis=0), a.T @ b, f"matmul_at_b {shape}", **TOL[dtype])


# ----- dense convolutions: the stem (NCHW), the implicit product (channels-last), the taps gathered
# (N, C, H, W, O, kernel, stride, padding, dilation, channels_last)
DENSE = {
    "stem_nchw_s2": (1, 3, 9, 11, 8, 3, 2, 1, 1, False),
    "implicit_odd": (3, 5, 7, 6, 37, 3, 1, 1, 1, True),
    "image_1x1": (2, 4, 1, 1, 5, 3, 1, 1, 1, True),
    "kernel_larger_than_image": (1, 3, 2, 3, 17, 5, 1, 2, 1, True),
    "dilated_s2": (3, 6, 9, 8, 33, 3, 2, 2, 2, True),
}


def _dense_case(case, dtype):
    n, c, h, wd, o, k, stride, pad, dil, channels_last = DENSE[case]
    rng = _rng(n, c, h, wd, o)
    x = rng.standard_normal((n, c, h, wd)).astype(dtype)
    if channels_last:
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    w = rng.standard_normal((o, c, k, k)).astype(dtype)
    return x, w, (stride, stride), (pad, pad), (dil, dil)


@DTYPES
@pytest.mark.parametrize("case", list(DENSE))
def test_dense_convolution_and_tap_gathering_stay_inside_their_arrays(case, dtype):
    x, w, stride, padding, dilation = _dense_case(case, dtype)
    n, c = x.shape[:2]
    o, _, kh, kw = w.shape
    oh, ow = (K.output_size(x.shape[2 + i], w.shape[2 + i], stride[i], padding[i], dilation[i]) for i in range(2))
    channels_last = DENSE[case][-1]
    rng = _rng(o)
    scale, shift = rng.uniform(0.5, 1.5, o), rng.standard_normal(o)
    g = Guard()
    # one task per image and band of output rows, each with its own padded copy of the rows it reads
    band, band_rows, band_taps = conv_dense.dense_bands(x.shape, kh, kw, oh, stride, padding, dilation,
                                                        channels_last, np.dtype(dtype).itemsize)
    out = g.nan((n, oh, ow, o), dtype)
    gemm.conv_dense(g.place(conv_dense.dense_input(x, channels_last)), g.place(band_taps),
                    g.place(w.reshape(o, -1).T, dtype), out, g.place(scale, dtype), g.place(shift, dtype),
                    activations.code(ACTIVATION), *stride, *padding, band, band_rows, c if channels_last else 1)
    g.check(out, what=f"conv_dense {case}")
    conv = reference_conv2d(x, w, None, stride, padding, dilation, 1)
    expected = _activation_reference(conv * scale[:, None, None] + shift[:, None, None])
    assert_close(out.transpose(0, 3, 1, 2), expected, f"conv_dense {case}", **TOL[dtype])

    xp, (sn, sh, sw), taps = conv_dense._padded_taps(x, w.shape, padding, dilation)
    xp_g, taps_g = g.place(xp), g.place(taps)
    rows = g.nan((n * oh * ow, c * kh * kw), dtype)
    gemm.gather_taps(xp_g, taps_g, rows, sn, stride[0] * sh, stride[1] * sw, oh, ow)
    g.check(rows, what=f"gather_taps {case}")
    pixel = np.arange(n * oh * ow)
    base = (pixel // (oh * ow)) * sn + (pixel % (oh * ow) // ow) * stride[0] * sh + (pixel % ow) * stride[1] * sw
    assert np.array_equal(rows, xp[base[:, None] + taps[None, :]]), f"gather_taps {case}: wrong taps"


# ----- depthwise rows: 3x3 / 5x5, stride 1 / 2, wide images in place, narrow ones via the padded band
# (N, C, H, W, kernel, stride, padding, row dilation): wide rows have 32 or more output columns
DEPTHWISE = {
    "3x3_s1_wide": (1, 19, 5, 37, 3, 1, 1, 1),
    "5x5_s2_wide": (2, 21, 6, 67, 5, 2, 2, 1),
    "3x3_s1_wide_row_dilated": (1, 16, 7, 36, 3, 1, 2, 2),
    "3x3_s2_narrow": (3, 17, 7, 9, 3, 2, 1, 1),
    "5x5_s1_narrow": (1, 8, 6, 7, 5, 1, 2, 1),
    "3x3_image_1x1": (1, 33, 1, 1, 3, 1, 1, 1),
    "5x5_larger_than_image": (2, 5, 2, 2, 5, 1, 2, 1),
    "5x5_s2_larger_than_image": (1, 16, 3, 2, 5, 2, 2, 1),
    "7x7_direct": (1, 9, 5, 6, 7, 1, 3, 1),
}


@DTYPES
@pytest.mark.parametrize("case", list(DEPTHWISE))
def test_depthwise_kernels_stay_inside_their_arrays(case, dtype):
    n, c, h, wd, k, s, p, dh = DEPTHWISE[case]
    rng = _rng(n, c, h, wd, k)
    x = rng.standard_normal((n, c, h, wd))
    w = rng.standard_normal((c, 1, k, k))
    bias, scale, shift = rng.standard_normal(c), rng.uniform(0.5, 1.5, c), rng.standard_normal(c)
    stride, padding, dilation = (s, s), (p, p), (dh, 1)
    oh, ow = (K.output_size((h, wd)[i], k, stride[i], padding[i], dilation[i]) for i in range(2))
    conv = reference_conv2d(x, w, bias, stride, padding, dilation, c)
    expected = _activation_reference(conv * scale[:, None, None] + shift[:, None, None])
    taps = w[:, 0].transpose(1, 2, 0)
    for band in (1, oh):
        g = Guard()
        x_g = g.place(x.transpose(0, 2, 3, 1), dtype)
        out = g.nan((n, oh, ow, c), dtype)
        depthwise_cl.depthwise_forward_cl(x_g, g.place(taps, dtype), g.place(bias, dtype), g.place(scale, dtype),
                                          g.place(shift, dtype), activations.code(ACTIVATION), out, *stride,
                                          *padding, *dilation, band)
        g.check(out, what=f"depthwise forward {case} band {band}")
        assert_close(out.transpose(0, 3, 1, 2), expected, f"depthwise forward {case}", **TOL[dtype])

    grad = rng.standard_normal((n, c, oh, ow))
    expected_x, expected_w = reference_conv2d_backward(grad, x, w, stride, padding, dilation, c)
    g = Guard()
    grad_g, x_g = (g.place(v.transpose(0, 2, 3, 1), dtype) for v in (grad, x))
    taps_g = g.place(taps, dtype)
    grad_x = g.nan((n, h, wd, c), dtype)
    depthwise_cl.depthwise_backward_input_cl(grad_g, taps_g, grad_x, *stride, *padding, *dilation)
    partial = g.nan((n, k, k, c), np.float64)
    depthwise_cl.depthwise_backward_weight_cl(grad_g, x_g, partial, *stride, *padding, *dilation)
    g.check(grad_x, partial, what=f"depthwise backward {case}")
    assert_close(grad_x.transpose(0, 3, 1, 2), expected_x, f"depthwise grad of x {case}", **TOL[dtype])
    assert_close(partial.sum(axis=0).transpose(2, 0, 1)[:, None], expected_w, f"depthwise grad of w {case}",
                 **TOL[dtype])


# ----- the per-channel passes: SE / pooling, batch norm, elementwise activations ------------------
@pytest.mark.parametrize("shape", [(1, 1, 17), (3, 7, 33), (2, 49, 5)], ids=lambda s: "x".join(map(str, s)))
def test_channel_kernels_stay_inside_their_arrays(shape):
    n, p, c = shape
    rng = _rng(*shape)
    x, grad = rng.standard_normal(shape), rng.standard_normal(shape)
    gate, pooled_grad = rng.uniform(0, 1, (n, c)), rng.standard_normal((n, c))
    tol = TOL[np.float32]
    for layout in ("channels_last", "planes"):
        def arranged(v):  # [N, P, C] values in the kernel's layout
            return v if layout == "channels_last" else v.transpose(0, 2, 1)

        cl = layout == "channels_last"
        g = Guard()
        x_g, grad_g = g.place(arranged(x), np.float32), g.place(arranged(grad), np.float32)
        gate_g, pooled_g = g.place(gate, np.float32), g.place(pooled_grad, np.float32)
        means, sums = g.nan((n, c), np.float32), g.nan((n, c), np.float64)
        gated, grad_x = g.nan(x_g.shape, np.float32), g.nan(x_g.shape, np.float32)
        (channel_reduce.channel_means if cl else channel_reduce.plane_means)(x_g, means)
        (channel_reduce.gate_forward if cl else channel_reduce.plane_gate)(x_g, gate_g, gated)
        (channel_reduce.gated_sums if cl else channel_reduce.plane_gated_sums)(grad_g, x_g, sums)
        (channel_reduce.gate_backward_input if cl else channel_reduce.plane_gate_backward_input)(
            grad_g, gate_g, pooled_g, grad_x)
        g.check(means, sums, gated, grad_x, what=f"channel kernels {layout} {shape}")
        assert_close(means, x.mean(axis=1), f"means {layout}", **tol)
        assert_close(sums, (grad * x).sum(axis=1), f"gated sums {layout}", **tol)
        assert_close(gated, arranged(x * gate[:, None]), f"gate {layout}", **tol)
        assert_close(grad_x, arranged(grad * gate[:, None] + pooled_grad[:, None]), f"gate backward {layout}", **tol)


@pytest.mark.parametrize("shape", [(1, 17), (13, 33), (50, 7)], ids=lambda s: "x".join(map(str, s)))
def test_batch_norm_passes_stay_inside_their_arrays(shape):
    m, c = shape
    rng = _rng(*shape)
    x, grad = rng.standard_normal(shape), rng.standard_normal(shape)
    pivot, mean = x[0], x.mean(axis=0)
    scale, shift = rng.uniform(0.5, 1.5, c), rng.standard_normal(c)
    k, mean_grad, coef = rng.standard_normal(c), rng.standard_normal(c), rng.uniform(0.5, 1.5, c)
    kind = activations.code(ACTIVATION)
    tol = TOL[np.float32]
    g = Guard()
    f32 = [g.place(v, np.float32) for v in (x, grad, scale, shift)]
    x_g, grad_g, scale_g, shift_g = f32
    x32 = x_g.astype(np.float64)  # the values the kernels see
    z = x32 * scale_g + shift_g
    for per_block in (1, 4, m):
        blocks = -(-m // per_block)
        partial = g.nan((blocks, 2, c), np.float64)
        batchnorm.channel_sums(x_g, g.place(pivot), partial, per_block)
        g.check(partial, what=f"channel_sums {shape} blocks of {per_block}")
        assert_close(partial.sum(axis=0), [(x32 - pivot).sum(0), ((x32 - pivot) ** 2).sum(0)], "channel sums", **tol)

        grad_z, partial = g.nan(shape, np.float32), g.nan((blocks, 2, c), np.float64)
        batchnorm.backward_sums(grad_g, x_g, scale_g, shift_g, g.place(mean), grad_z, partial, per_block, kind)
        g.check(grad_z, partial, what=f"backward_sums {shape} blocks of {per_block}")
        expected_grad_z = grad_g * _derivative(z, ACTIVATION)
        assert_close(grad_z, expected_grad_z, "grad of the pre-activation", **tol)
        assert_close(partial.sum(axis=0), [expected_grad_z.sum(0), (expected_grad_z * (x32 - mean)).sum(0)],
                     "backward sums", **tol)

    out = g.nan(shape, np.float32)
    batchnorm.affine_activation_rows(x_g, scale_g, shift_g, out, kind)
    inplace = g.place(x_g)
    batchnorm.affine_activation_rows_inplace(inplace, scale_g, shift_g, kind)
    grad_z = g.place(grad_g)
    cast = [g.place(v, np.float32) for v in (mean, k, mean_grad, coef)]
    batchnorm.backward_input_inplace(grad_z, x_g, *cast)
    g.check(out, inplace, grad_z, what=f"batch norm elementwise passes {shape}")
    assert_close(out, _activation_reference(z), "affine + activation", **tol)
    assert np.array_equal(inplace, out), "the in-place pass differs from the out-of-place one"
    expected = (grad_g - cast[2] - (x_g - cast[0]) * cast[1]) * cast[3]
    assert_close(grad_z, expected, "backward input", **tol)

    affine = [g.nan(c, np.float32) for _ in range(2)]
    var, weight, bias, conv_bias = rng.uniform(0.5, 2, c), rng.standard_normal(c), rng.standard_normal(c), rng.standard_normal(c)
    batchnorm.inference_affine(*(g.place(v, np.float32) for v in (mean, var, weight, bias, conv_bias)), 1e-3, *affine)
    g.check(*affine, what="inference_affine")
    expected_scale = weight / np.sqrt(var + 1e-3)
    assert_close(affine[0], expected_scale, "inference scale", **tol)
    assert_close(affine[1], bias - mean * expected_scale + conv_bias * expected_scale, "inference shift", **tol)


def _derivative(z, name):
    """d activation / dz by central differences in float64 (the inputs are kept away from kinks)."""
    h = 1e-6
    f = REFERENCE_ACTIVATIONS[name] if name in REFERENCE_ACTIVATIONS else np.tanh
    return (f(z + h) - f(z - h)) / (2 * h)


ELEMENTWISE = [r.name for r in activations.builtin_records()]
KINKS = [-3.0, 0.0, 3.0, 6.0]


@pytest.mark.parametrize("size", [1, 17, elementwise.BLOCK + 3])
def test_elementwise_activations_stay_inside_their_arrays(size):
    x = away_from(_rng(size).standard_normal(size) * 4, KINKS)
    grad = _rng(size, 1).standard_normal(size)
    for name in ELEMENTWISE:
        record = activations.get(name)
        f = REFERENCE_ACTIVATIONS.get(name, np.tanh)
        g = Guard()
        x_g, grad_g = g.place(x, np.float32), g.place(grad, np.float32)
        x32 = x_g.astype(np.float64)
        out, grad_x = g.nan(size, np.float32), g.nan(size, np.float32)
        elementwise.activation_forward(x_g, out, record.code)
        inplace = g.place(x_g)
        elementwise.activation_inplace(inplace, record.code)
        saved = g.place(f(x32) if record.saves_output else x32, np.float32)
        elementwise.activation_backward(grad_g, saved, grad_x, grad_code(record, record.saves_output))
        g.check(out, inplace, grad_x, what=f"{name} size {size}")
        assert_close(out, f(x32), f"{name} forward", **TOL[np.float32])
        assert np.array_equal(inplace, out), f"{name}: the in-place kernel differs"
        assert_close(grad_x, grad_g * _derivative(x32, name), f"{name} backward", rtol=1e-4, atol=1e-4)


# ----- the dispatch on poisoned buffers: no kernel reads memory it has not written ----------------
def test_dispatch_results_do_not_depend_on_what_reused_buffers_held(monkeypatch):
    """Every compiled family through the dispatch (forward and backward, the fused inference path),
    with every reused buffer handed out full of NaN: the results must have no NaN and equal, bit
    for bit, those of a run on ordinary buffers."""
    for kind in threads.COMPILED_MIN_ELEMENTS:  # the compiled passes even on these small arrays
        monkeypatch.setitem(threads.COMPILED_MIN_ELEMENTS, kind, 0)
    plain = workload()
    monkeypatch.setattr(buffers, "POISON", True)
    poisoned = workload()
    for i, (a, b) in enumerate(zip(plain, poisoned)):
        assert not np.isnan(b).any(), f"result {i}: NaN from a buffer read before it was written"
    assert digest(poisoned) == digest(plain), "results depend on what the reused buffers held"


# ----- broken conventions are caught ---------------------------------------------------------------
def _broken_broadcast_tile(g):
    """``out`` one row shorter than ``a``: the last tile's stores land past it."""
    a, b = g.place(_rng(1).standard_normal((13, 24)), np.float32), g.place(_rng(2).standard_normal((24, 40)), np.float32)
    out = g.nan((12, 40), np.float32)
    gemm.matmul_broadcast(a, b, out, g.place(np.ones(40, np.float32)), g.place(np.zeros(40, np.float32)),
                          g.nan((0, 0), np.float32), 0, 13, 1)
    return out


def _broken_broadcast_tile_depth(g):
    """``b`` one row shorter than ``a`` is deep, in whole tiles: their plain vector loads read past it."""
    a, b = g.place(_rng(1).standard_normal((12, 24)), np.float32), g.place(_rng(2).standard_normal((23, 32)), np.float32)
    out = g.nan((12, 32), np.float32)
    gemm.matmul_broadcast(a, b, out, g.place(np.ones(32, np.float32)), g.place(np.zeros(32, np.float32)),
                          g.nan((0, 0), np.float32), 0, 12, 1)
    return out


def _broken_dot_tile(g):
    """``out`` one column narrower than ``w`` has rows: the dot tiles' stores land past it."""
    a, w = g.place(_rng(1).standard_normal((8, 24)), np.float32), g.place(_rng(2).standard_normal((8, 24)), np.float32)
    out = g.nan((8, 7), np.float32)
    gemm.matmul_dot(a, w, out, g.place(np.ones(8, np.float32)), g.place(np.zeros(8, np.float32)),
                    g.nan((0, 0), np.float32), 0, 8, 8)
    return out


def _broken_gathered_tile(g):
    """A padded input a few elements short: the last taps read past it (the grouped convolution's
    gathered tiles, the dense one's on a one-group convolution)."""
    x, w, stride, padding, dilation = _dense_case("implicit_odd", np.float32)
    xp, (sn, sh, sw), taps = conv_dense._padded_taps(x, w.shape, padding, dilation)
    o, c = w.shape[:2]
    out = g.nan((x.shape[0], 7, 6, o), np.float32)
    b = np.ascontiguousarray(w.reshape(1, o, -1).transpose(0, 2, 1))
    grouped.grouped_forward(g.place(xp[:-3]), g.place(taps), g.place(b, np.float32), out,
                            g.place(np.ones(o, np.float32)), g.place(np.zeros(o, np.float32)), 0, sn, sh, sw, c)
    return out


def _broken_columns_tile(g):
    """``b`` one row shorter than ``a``: the weight gradient's tiles read past it."""
    a, b = g.place(_rng(1).standard_normal((20, 7)), np.float32), g.place(_rng(2).standard_normal((19, 9)), np.float32)
    partial = g.nan((1, 7, 9), np.float32)
    gemm.matmul_at_b(a, b, partial, 64)
    return partial


def _broken_depthwise_row(g):
    """Weights for one channel fewer than the input has: the row kernels read past them."""
    x = g.place(_rng(1).standard_normal((1, 6, 40, 17)), np.float32)
    taps = g.place(_rng(2).standard_normal((3, 3, 16)), np.float32)
    out = g.nan((1, 6, 40, 17), np.float32)
    depthwise_cl.depthwise_forward_cl(x, taps, g.place(np.zeros(17, np.float32)), g.nan(0, np.float32),
                                      g.nan(0, np.float32), 0, out, 1, 1, 1, 1, 1, 1, 6)
    return out


def _broken_plain_loop(g):
    """An output for one image fewer than the input has: the plain numba loop indexes past it."""
    x = g.place(_rng(1).standard_normal((3, 5, 16)), np.float32)
    out = g.nan((2, 16), np.float32)
    channel_reduce.channel_means(x, out)
    return out


BROKEN = {f.__name__[len("_broken_"):]: f for f in (_broken_broadcast_tile, _broken_broadcast_tile_depth, _broken_dot_tile,
                                                     _broken_gathered_tile, _broken_columns_tile, _broken_depthwise_row,
                                                     _broken_plain_loop)}


@pytest.mark.parametrize("family", list(BROKEN))
def test_a_broken_calling_convention_is_caught(family):
    """Checked kernels raise IndexError; plain ones (the overrun kept within the margin) damage the
    margin or leak its NaN into the result."""
    g = Guard()
    if bounds.enabled():
        with pytest.raises(IndexError, match="EXCITE_KERNEL_BOUNDSCHECK|out of bounds"):
            BROKEN[family](g)
        return
    out = BROKEN[family](g)
    assert not g.intact() or np.isnan(out).any(), f"{family}: the overrun went unnoticed"


def test_every_case_passes_the_bounds_checks_in_a_subprocess():
    """This file again with EXCITE_KERNEL_BOUNDSCHECK=1: no access of any case leaves its array, and
    every broken convention raises IndexError. float32 only, to bound the compile time: the float64
    tiles are the same IR with half the lanes (run the file by hand with the variable set to check
    them too)."""
    if bounds.enabled():
        pytest.skip("this process is the checked run")
    env = dict(os.environ, EXCITE_KERNEL_BOUNDSCHECK="1")
    command = [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-x", "-k",
               "not in_a_subprocess and not f64", os.path.abspath(__file__)]
    result = subprocess.run(command, capture_output=True, text=True, env=env, cwd=ROOT, timeout=900)
    report = result.stdout[-6000:] + result.stderr[-3000:]
    assert result.returncode == 0, report
    summary = result.stdout.strip().splitlines()[-1]
    assert "passed" in summary and "skipped" not in summary and "deselected" in summary, report
