"""The NumPy tier's twins of the `gemm` and `grouped` kernels write what the compiled kernels write.

Arguments are built the way the real callers build them (`pointwise`, `conv_dense`, `conv_grouped`); the
compiled kernel and its twin run on separate copies of the output, which must agree to float tolerance.
"""
import zlib

import numpy as np
import pytest

from excite.kernels import activations, conv, conv_dense, conv_grouped, pointwise
from excite.kernels.activations import IDENTITY
from excite.kernels.compiled import gemm, grouped
from excite.kernels.layout import from_nhwc
from excite.kernels.numpy_tier import gemm as tier_gemm
from excite.kernels.numpy_tier import grouped as tier_grouped
from excite.kernels.numpy_tier import twin
from oracle import assert_close

KINDS = [IDENTITY] + [record.code for record in activations.builtin_records()]
DTYPES = [np.float32, np.float64]
RTOL = {np.float32: 2e-5, np.float64: 1e-12}
TASKS = 2


def _rng(*key):
    return np.random.default_rng(zlib.crc32(repr(key).encode()))


def _close(actual, expected, dtype, what):
    assert actual.dtype == expected.dtype
    assert_close(actual, expected, what, rtol=RTOL[np.dtype(dtype).type])


def _both(compiled, tier, outputs, *args):
    """Run ``compiled`` and ``tier`` on separate copies of ``outputs`` (NaN-filled: every element the kernel
    writes must be written); the arguments ``args`` may name an output by its index as a str ('0', '1')."""
    results = []
    for fn in (compiled, tier):
        copies = [np.full_like(o, np.nan) for o in outputs]
        call = [copies[int(a)] if isinstance(a, str) else a for a in args]
        returned = fn(*call)
        results.append((returned, copies))
    (r1, c1), (r2, c2) = results
    assert r1 is None and r2 is None
    return c1, c2


def _epilogue_args(rng, n, dtype):
    scale = rng.uniform(0.5, 1.5, n).astype(dtype)
    shift = rng.uniform(-0.5, 0.5, n).astype(dtype)
    return scale, shift


def test_every_twin_is_found():
    for module, names in [("gemm", ["matmul_broadcast", "matmul_dot", "conv_dense", "matmul_at_b", "gather_taps"]),
                          ("grouped", ["grouped_forward_packed", "grouped_forward", "grouped_weight_gradient_packed",
                                       "grouped_weight_gradient", "gather_group_taps"])]:
        for name in names:
            assert twin(f"excite.kernels.compiled.{module}", name) is not None, name


# ----- 1x1 products ---------------------------------------------------------------------------
SHAPES = [(1, 3, 5), (7, 17, 33), (50, 64, 40), (130, 24, 100), (5, 200, 16), (64, 8, 1)]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("kind", KINDS)
def test_matmul_broadcast_and_dot(dtype, kind):
    for i, (m, k, n) in enumerate(SHAPES):
        rng = _rng("mm", i, kind, np.dtype(dtype).name)
        a = rng.standard_normal((m, k)).astype(dtype)
        w = rng.standard_normal((n, k)).astype(dtype) / dtype(np.sqrt(k))
        b = np.ascontiguousarray(w.T)
        scale, shift = _epilogue_args(rng, n, dtype)
        residual = rng.standard_normal((m, n)).astype(dtype) if (i + kind) % 2 else np.empty((0, 0), dtype)
        blocks = pointwise._broadcast_blocks(m, n, dtype)
        c1, c2 = _both(gemm.matmul_broadcast, tier_gemm.matmul_broadcast, [np.empty((m, n), dtype)],
                       a, b, "0", scale, shift, residual, kind, *blocks)
        _close(c2[0], c1[0], dtype, f"matmul_broadcast {m}x{k}x{n}")
        p1, p2 = _both(gemm.matmul_broadcast, tier_gemm.matmul_broadcast, [np.empty((m, n), dtype)],
                       a, pointwise.packed_panels(w, dtype), "0", scale, shift, residual, kind, *blocks)
        _close(p2[0], c1[0], dtype, f"matmul_broadcast, weight in panels, {m}x{k}x{n}")
        _close(p1[0], c1[0], dtype, f"matmul_broadcast, weight in panels, {m}x{k}x{n}")
        dot_blocks = (m, -(-(-(-n // TASKS)) // gemm.DOT) * gemm.DOT)
        d1, d2 = _both(gemm.matmul_dot, tier_gemm.matmul_dot, [np.empty((m, n), dtype)],
                       a, w, "0", scale, shift, residual, kind, *dot_blocks)
        _close(d2[0], d1[0], dtype, f"matmul_dot {m}x{k}x{n}")
        _close(d1[0], c1[0], dtype, "the two kernels")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("m, o, c", [(1, 3, 5), (63, 17, 33), (200, 40, 24), (1000, 9, 70), (700, 104, 16)])
def test_matmul_at_b(dtype, m, o, c):
    rng = _rng("atb", m, o, c, np.dtype(dtype).name)
    grad = rng.standard_normal((m, o)).astype(dtype)
    x = rng.standard_normal((m, c)).astype(dtype)
    chunks = max(1, min(pointwise.GRADIENT_CHUNKS, m // 64))
    k_block = max(gemm.MR, pointwise.GRADIENT_BLOCK_BYTES // ((o + c) * grad.itemsize))
    p1, p2 = _both(gemm.matmul_at_b, tier_gemm.matmul_at_b, [np.empty((chunks, o, c), dtype)], grad, x, "0", k_block)
    _close(p2[0], p1[0], dtype, "partial sums")
    _close(p2[0].sum(axis=0), (grad.T.astype(np.float64) @ x).astype(dtype), dtype, "their total")


@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_at_b_short_and_empty_chunks(dtype):
    # 9 rows in 8 chunks: 2 rows each, the last chunks empty; a small k_block splits the chunks further
    for m, chunks, k_block in [(9, 8, 1), (37, 8, 6), (5, 3, 6)]:
        rng = _rng("atb-edge", m, chunks)
        grad = rng.standard_normal((m, 7)).astype(dtype)
        x = rng.standard_normal((m, 19)).astype(dtype)
        p1, p2 = _both(gemm.matmul_at_b, tier_gemm.matmul_at_b, [np.empty((chunks, 7, 19), dtype)], grad, x, "0",
                       k_block)
        _close(p2[0], p1[0], dtype, f"partial sums of {m} rows in {chunks} chunks")


# ----- dense convolutions ---------------------------------------------------------------------
# (n, c, h, w, o, kernel, stride, padding, dilation, channels_last)
DENSE = [
    (1, 3, 11, 13, 16, 3, 2, 1, 1, False),  # the stem: NCHW input, 16 outputs (the narrow tile)
    (2, 5, 9, 10, 33, 3, 1, 1, 1, True),
    (2, 8, 12, 11, 40, 5, 2, 2, 1, True),
    (1, 6, 10, 9, 7, 3, 1, 2, 2, True),
    (3, 4, 7, 8, 70, 5, 1, 2, 1, False),
    (1, 16, 5, 5, 24, 3, 2, 0, 1, True),
    (2, 3, 12, 11, 8, 3, 1, 2, 2, False),  # NCHW and dilated: no runs of consecutive taps
]


def _input(rng, n, c, h, w, dtype, channels_last):
    x = rng.standard_normal((n, h, w, c) if channels_last else (n, c, h, w)).astype(dtype)
    return from_nhwc(x) if channels_last else x


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", range(len(DENSE)))
def test_conv_dense(dtype, case):
    n, c, h, wd, o, kk, stride, padding, dilation, channels_last = DENSE[case]
    rng = _rng("dense", case, np.dtype(dtype).name)
    x = _input(rng, n, c, h, wd, dtype, channels_last)
    w = rng.standard_normal((o, c, kk, kk)).astype(dtype) / dtype(np.sqrt(c * kk * kk))
    oh = conv.output_size(h, kk, stride, padding, dilation)
    ow = conv.output_size(wd, kk, stride, padding, dilation)
    b = np.ascontiguousarray(w.reshape(o, -1).T)
    band, rows, band_taps = conv_dense.dense_bands(x.shape, kk, kk, oh, (stride, stride), (padding, padding),
                                                   (dilation, dilation), channels_last, np.dtype(dtype).itemsize)
    for kind in KINDS[case % 3::3]:
        scale, shift = _epilogue_args(rng, o, dtype)
        o1, o2 = _both(gemm.conv_dense, tier_gemm.conv_dense, [np.empty((n, oh, ow, o), dtype)],
                       conv_dense.dense_input(x, channels_last), band_taps, b, "0", scale, shift, kind, stride, stride,
                       padding, padding, band, rows, c if channels_last else 1)
        _close(o2[0], o1[0], dtype, f"conv_dense case {case} kind {kind}")
    taps = conv_dense._tap_offsets(x.shape, kk, kk, (padding, padding), (dilation, dilation), channels_last)
    xp, (sn, sh, sw) = conv_dense._zero_padded_input(x, (padding, padding))
    # the gathered rows of the weight gradient
    rows = np.empty((n * oh * ow, b.shape[0]), dtype)
    r1, r2 = _both(gemm.gather_taps, tier_gemm.gather_taps, [rows], xp, taps, "0", sn, stride * sh, stride * sw, oh, ow)
    np.testing.assert_array_equal(r2[0], r1[0])
    # fewer rows than pixels (not whole output rows): the kernel gathers the first ones
    r1, r2 = _both(gemm.gather_taps, tier_gemm.gather_taps, [rows[:-3]], xp, taps, "0", sn, stride * sh, stride * sw,
                   oh, ow)
    np.testing.assert_array_equal(r2[0], r1[0])


# ----- grouped convolutions -------------------------------------------------------------------
# (n, groups, cg, og, h, w, kernel, stride, padding, dilation)
GROUPED = [
    (2, 13, 8, 8, 9, 10, 3, 1, 1, 1),  # 104 channels in groups of 8: packed, a part block for float32
    (1, 13, 8, 8, 11, 9, 3, 2, 1, 1),
    (2, 4, 16, 16, 8, 7, 3, 2, 1, 1),  # groups of 16: packed for float32, not for float64
    (1, 3, 16, 16, 9, 9, 5, 1, 2, 1),
    (1, 3, 24, 24, 7, 9, 3, 1, 2, 2),  # RegNet-like 24-wide groups, dilation 2
    (2, 3, 4, 12, 9, 8, 5, 2, 2, 1),  # in and out widths differ
    (1, 2, 8, 40, 6, 6, 3, 1, 1, 1),  # outputs wider than a tile
    (1, 5, 8, 8, 3, 14, 5, 1, 2, 1),
]


def _grouped_case(case, dtype):
    n, groups, cg, og, h, wd, kk, stride, padding, dilation = GROUPED[case]
    rng = _rng("grouped", case, np.dtype(dtype).name)
    x = _input(rng, n, groups * cg, h, wd, dtype, True)
    w = rng.standard_normal((groups * og, cg, kk, kk)).astype(dtype) / dtype(np.sqrt(cg * kk * kk))
    oh = conv.output_size(h, kk, stride, padding, dilation)
    ow = conv.output_size(wd, kk, stride, padding, dilation)
    return rng, x, w, oh, ow, (stride, stride), (padding, padding), (dilation, dilation)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", range(len(GROUPED)))
def test_grouped_forward(dtype, case):
    rng, x, w, oh, ow, stride, padding, dilation = _grouped_case(case, dtype)
    o, cg, kh, kw = w.shape
    groups = GROUPED[case][1]
    packed, b = conv_grouped._grouped_weights(w, groups)
    xp, (sn, sh, sw), taps = conv_grouped._group_padded_taps(x, 1 if packed else cg, kh, kw, padding, dilation)
    name = "grouped_forward_packed" if packed else "grouped_forward"
    for kind in KINDS[case % 3::3]:
        scale, shift = _epilogue_args(rng, o, dtype)
        o1, o2 = _both(getattr(grouped, name), getattr(tier_grouped, name), [np.empty((x.shape[0], oh, ow, o), dtype)],
                       xp, taps, b, "0", scale, shift, kind, sn, stride[0] * sh, stride[1] * sw, cg)
        _close(o2[0], o1[0], dtype, f"{name} case {case} kind {kind}")


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", range(len(GROUPED)))
def test_grouped_weight_gradient(dtype, case):
    rng, x, w, oh, ow, stride, padding, dilation = _grouped_case(case, dtype)
    o, cg, kh, kw = w.shape
    groups = GROUPED[case][1]
    og = o // groups
    n = x.shape[0]
    g = rng.standard_normal((n, oh, ow, o)).astype(dtype)
    lanes = grouped.VECTOR_BYTES // x.itemsize
    if og == cg and cg in grouped.PACKED_WIDTHS and lanes % cg == 0:
        xp, (sn, sh, sw), taps = conv_grouped._group_padded_taps(x, 1, kh, kw, padding, dilation)
        blocks = -(-o // lanes)
        for chunks in {max(1, min(pointwise.GRADIENT_CHUNKS, n * oh // 4)), 3, 8}:
            p1, p2 = _both(grouped.grouped_weight_gradient_packed, tier_grouped.grouped_weight_gradient_packed,
                           [np.empty((chunks, blocks, kh * kw, cg, lanes), dtype)],
                           xp, taps, g.reshape(-1, o), "0", sn, stride[0] * sh, stride[1] * sw, oh, ow)
            _close(p2[0], p1[0], dtype, f"packed partial sums case {case}, {chunks} chunks")
    else:
        xp, (sn, sh, sw), taps = conv_grouped._group_padded_taps(x, cg, kh, kw, padding, dilation)
        k = cg * kh * kw
        r1, r2 = _both(grouped.gather_group_taps, tier_grouped.gather_group_taps,
                       [np.empty((n * oh * ow, groups * k), dtype)], xp, taps, "0", sn, stride[0] * sh,
                       stride[1] * sw, oh, ow, cg)
        np.testing.assert_array_equal(r2[0], r1[0])
        rows = r1[0]
        pixels = rows.shape[0]
        k_block = max(8, pointwise.GRADIENT_BLOCK_BYTES // ((og + k) * x.itemsize))
        for chunks in {max(1, min(pointwise.GRADIENT_CHUNKS, pixels // 64)), 5, 8}:
            p1, p2 = _both(grouped.grouped_weight_gradient, tier_grouped.grouped_weight_gradient,
                           [np.empty((chunks, groups, og, k), dtype)], g.reshape(-1, o), rows, "0", k_block)
            _close(p2[0], p1[0], dtype, f"partial sums case {case}, {chunks} chunks")


@pytest.mark.parametrize("dtype", DTYPES)
def test_packed_gradient_total_is_the_weight_gradient(dtype):
    # the twin's partial sums, summed and unpacked the way `conv_grouped._packed_backward_weight` does, are the
    # gradient an im2col product gives
    rng, x, w, oh, ow, stride, padding, dilation = _grouped_case(0, dtype)
    o, width, kh, kw = w.shape
    n = x.shape[0]
    g = rng.standard_normal((n, oh, ow, o)).astype(dtype)
    lanes = grouped.VECTOR_BYTES // x.itemsize
    xp, (sn, sh, sw), taps = conv_grouped._group_padded_taps(x, 1, kh, kw, padding, dilation)
    blocks = -(-o // lanes)
    partial = np.empty((4, blocks, kh * kw, width, lanes), dtype)
    tier_grouped.grouped_weight_gradient_packed(xp, taps, g.reshape(-1, o), partial, sn, stride[0] * sh,
                                                stride[1] * sw, oh, ow)
    total = partial.sum(axis=0).reshape(blocks, kh * kw, width, lanes // width, width).transpose(0, 3, 2, 4, 1)
    got = total.reshape(blocks * lanes, width, kh, kw)[:o]
    expected = conv_grouped._grouped_backward_weight(from_nhwc(g), x, w.shape, stride, padding, dilation, o // width)
    _close(got, expected.astype(dtype), dtype, "weight gradient")


def test_twins_leave_inputs_alone_and_write_every_output():
    # the NaN-filled outputs of `_both` already show every element is written; here the inputs, and the
    # padded input's zero border, stay as they were
    dtype = np.float32
    rng, x, w, oh, ow, stride, padding, dilation = _grouped_case(0, dtype)
    o, cg, kh, kw = w.shape
    b = conv_grouped._packed_weights(w, grouped.VECTOR_BYTES // w.itemsize)  # (float32 groups of 8 run unpacked)
    xp, (sn, sh, sw), taps = conv_grouped._group_padded_taps(x, 1, kh, kw, padding, dilation)
    before = [xp.copy(), taps.copy(), b.copy()]
    scale, shift = _epilogue_args(rng, o, dtype)
    out = np.full((x.shape[0], oh, ow, o), np.nan, dtype)
    tier_grouped.grouped_forward_packed(xp, taps, b, out, scale, shift, IDENTITY, sn, sh, sw, cg)
    assert not np.isnan(out).any()
    for a, bb in zip(before, [xp, taps, b]):
        np.testing.assert_array_equal(a, bb)
    a = rng.standard_normal((9, 5)).astype(dtype)
    bm = rng.standard_normal((5, 7)).astype(dtype)
    residual = rng.standard_normal((9, 7)).astype(dtype)
    kept = [a.copy(), bm.copy(), residual.copy(), scale[:7].copy()]
    out = np.empty((9, 7), dtype)
    tier_gemm.matmul_broadcast(a, bm, out, scale[:7], shift[:7], residual, activations.IDENTITY + 1, 9, 1)
    for before_, after in zip(kept, [a, bm, residual, scale[:7]]):
        np.testing.assert_array_equal(before_, after)


@pytest.mark.parametrize("budget", [1, 300, 5000])
def test_gathers_in_small_blocks(monkeypatch, budget):
    # a small gather budget splits the pixels into single rows, rows of one image, and runs of images:
    # the twins' results do not change
    monkeypatch.setattr(tier_gemm, "GATHER_ELEMENTS", budget)
    test_conv_dense(np.float64, 2)
    test_conv_dense(np.float32, 4)
    for case in (0, 4, 5):
        test_grouped_forward(np.float32, case)
        test_grouped_weight_gradient(np.float32, case)
