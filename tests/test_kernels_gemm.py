"""The compiled matrix products behind 1x1 convolutions (`excite.kernels.compiled.gemm` via `pointwise`) against
a float64 NumPy reference: both micro-kernels, odd shapes (edge tiles in rows, columns and depth),
every activation, the residual, float32 and float64; results must not depend on the task split."""
import numpy as np
import pytest

from excite.kernels import pointwise
from excite.kernels.compiled import activation_math, elementwise, gemm
from excite.kernels.numpy_tier import gemm as tier_gemm
from excite.kernels import activations
from oracle import REFERENCE_ACTIVATIONS, assert_close

TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-12, atol=1e-12)}
# (M, K, N): single rows and columns, fewer rows than a tile, depths not a multiple of a vector,
# columns not a multiple of a panel, one vector of columns (the narrow tile), and the shapes of real networks
# at batch 1
SHAPES = [(1, 1, 1), (1, 7, 5), (3, 1, 2), (5, 3, 40), (6, 16, 32), (13, 24, 72), (31, 100, 7), (200, 17, 33),
          (49, 1152, 192), (196, 80, 480), (300, 40, 24), (37, 20, 16)]


def _operands(m, k, n, dtype, seed=0):
    rng = np.random.default_rng(seed)
    a, w = rng.standard_normal((m, k)).astype(dtype), rng.standard_normal((n, k)).astype(dtype)
    scale, shift = rng.uniform(0.5, 1.5, n).astype(dtype), rng.standard_normal(n).astype(dtype)
    return a, w, scale, shift, rng.standard_normal((m, n)).astype(dtype)


def _expected(a, w, scale, shift, activation, residual=None):
    z = (a.astype(np.float64) @ w.T.astype(np.float64)) * scale + shift
    z = REFERENCE_ACTIVATIONS[activation](z)
    return z if residual is None else z + residual


def _broadcast(a, w, scale, shift, residual, kind, row_block, panel_group):
    """The broadcast kernel on w.T [K, N] and on its panels (`pointwise.packed_panels`): the same bits."""
    outs = []
    for b in (np.ascontiguousarray(w.T), pointwise.packed_panels(w, a.dtype)):
        outs.append(np.empty((a.shape[0], w.shape[0]), a.dtype))
        gemm.matmul_broadcast(a, b, outs[-1], scale, shift, residual, kind, row_block, panel_group)
    np.testing.assert_array_equal(outs[1], outs[0], err_msg="the weight in panels")
    return outs[0]


def _dot(a, w, scale, shift, residual, kind, row_block, col_group):
    out = np.empty((a.shape[0], w.shape[0]), a.dtype)
    gemm.matmul_dot(a, w, out, scale, shift, residual, kind, row_block, col_group)
    return out


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("m", [1, 3, 9])
def test_dot_kernel_weight_rows_padded_apart_give_the_same_bits(m, dtype):
    """Weight rows 2 KB (or a multiple) apart are padded by a cache line for the dot kernel (`pointwise`); the
    padding is never read: the product equals the reference and, bit for bit, the kernel on the unpadded rows."""
    k = pointwise.ALIASED_ROW_BYTES // np.dtype(dtype).itemsize
    a, w, scale, shift, residual = _operands(m, k, 37, dtype, seed=2)
    operand = pointwise._dot_operand(w)
    assert operand.shape == (37, k + pointwise.ROW_PADDING_BYTES // np.dtype(dtype).itemsize)
    operand[:, k:] = np.nan  # never read
    kind = activations.code("relu")
    padded = _dot(a, operand, scale, shift, residual, kind, m, 16)
    np.testing.assert_array_equal(padded, _dot(a, w, scale, shift, residual, kind, m, 16))
    assert_close(padded, _expected(a, w, scale, shift, "relu", residual), "padded rows", **TOL[dtype])
    twin = np.empty_like(padded)  # the kernel's NumPy twin (tiered execution) reads the same operand
    tier_gemm.matmul_dot(a, operand, twin, scale, shift, residual, kind, m, 16)
    assert_close(twin, padded, "padded rows, NumPy twin", **TOL[dtype])
    assert pointwise._dot_operand(w[:, :k - 1].copy()).shape == (37, k - 1)  # other lengths stay as they are


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", SHAPES, ids=lambda s: "x".join(map(str, s)))
def test_both_micro_kernels_match_the_reference_for_any_task_split(shape, dtype):
    m, k, n = shape
    a, w, scale, shift, residual = _operands(m, k, n, dtype)
    no_residual = np.empty((0, 0), dtype)
    for activation in ("silu", None):
        kind = activations.code(activation)
        expected = _expected(a, w, scale, shift, activation, residual)
        results = []
        for row_block, group in ((1, 1), (7, 2), (m, 1000)):
            for run in (_broadcast, _dot):
                out = run(a, w, scale, shift, residual, kind, row_block, group)
                assert_close(out, expected, f"{run.__name__} {shape} blocks {row_block}x{group}", **TOL[dtype])
                results.append((run.__name__, out))
        for name, out in results:  # one fixed sum per output, whatever the tiling: bit-identical
            same = [o for r, o in results if r == name]
            assert all(np.array_equal(out, o) for o in same), f"{name} results depend on the task split"
        plain = _dot(a, w, scale, shift, no_residual, kind, m, 1000)
        assert_close(plain, _expected(a, w, scale, shift, activation), f"no residual {shape}", **TOL[dtype])


@pytest.mark.parametrize("activation", list(REFERENCE_ACTIVATIONS))
def test_pointwise_applies_every_activation_after_the_affine_map(activation):
    for m, k, n in ((7, 24, 40), (300, 16, 96), (49, 96, 24)):
        a, w, scale, shift, residual = _operands(m, k, n, np.float32, seed=m)
        out = pointwise.pointwise(a, w, scale, shift, activation)
        assert_close(out, _expected(a, w, scale, shift, activation), f"{activation} {(m, k, n)}", **TOL[np.float32])
        out = pointwise.pointwise(a, w.reshape(n, k, 1, 1), scale, shift, activation, residual)
        assert_close(out, _expected(a, w, scale, shift, activation, residual), f"{activation} + residual",
                     **TOL[np.float32])


@pytest.mark.parametrize("n", [16, 24, 32, 33, 96])
def test_weight_panels_lay_out_the_transposed_weight_panel_by_panel(n):
    """`pointwise.packed_panels`: panel p holds w.T's columns p * NR .. (p + 1) * NR, zeros past N."""
    k = 5
    w = np.arange(n * k, dtype=np.float32).reshape(n, k) + 1
    nr = gemm.panel_width(np.float32)
    panels = pointwise.packed_panels(w, np.float32).reshape(-1, k, nr)
    assert panels.shape[0] == -(-n // nr)
    np.testing.assert_array_equal(np.concatenate(list(panels), axis=1)[:, :n], w.T)
    assert not np.concatenate(list(panels), axis=1)[:, n:].any()


def test_a_kept_plan_takes_the_broadcast_kernel_for_products_that_widen():
    """A compiled graph's plans (``kept``) lay the weight out once, so from KEPT_BROADCAST_MIN_ROWS rows they
    take the broadcast kernel for products that widen the channels KEPT_BROADCAST_MIN_WIDENING times; a
    one-call plan keeps weighing the layout's cost, as do fewer rows and narrower products. The kept plan's
    weight is in panels, the one-call plan's plainly transposed; the product is the reference's either way."""
    rows, widening = pointwise.KEPT_BROADCAST_MIN_ROWS, pointwise.KEPT_BROADCAST_MIN_WIDENING
    for (m, k, n), kept, kernel in [((49, 96, 96 * widening), True, "matmul_broadcast"),
                                    ((49, 96, 96 * widening), False, "matmul_dot"),
                                    ((rows - 1, 96, 96 * widening), True, "matmul_dot"),
                                    ((49, 96, 96 * widening - 1), True, "matmul_dot"),
                                    ((49, 576, 96), True, "matmul_dot")]:
        a, w, scale, shift, _ = _operands(m, k, n, np.float32, seed=n)
        plan = pointwise.Pointwise(m, w, scale, shift, "hardswish", np.float32, kept=kept)
        assert plan.kernel.__name__ == kernel, ((m, k, n), kept)
        if kernel == "matmul_broadcast":
            np.testing.assert_array_equal(plan.operand, pointwise.packed_panels(w, np.float32))
        out = plan(a, np.empty((m, n), np.float32))
        assert_close(out, _expected(a, w, scale, shift, "hardswish"), f"{(m, k, n)} kept={kept}", **TOL[np.float32])
    a, w, scale, shift, _ = _operands(300, 40, 240, np.float32)
    one_call = pointwise.Pointwise(300, w, scale, shift, None, np.float32)
    assert one_call.kernel.__name__ == "matmul_broadcast"
    np.testing.assert_array_equal(one_call.operand, w.T)


def test_pointwise_defaults_to_a_plain_product():
    a, w, *_ = _operands(260, 40, 24, np.float64)
    assert_close(pointwise.pointwise(a, w), a @ w.T, "a @ w.T", **TOL[np.float64])


def test_non_finite_values_propagate():
    a, w, scale, shift, _ = _operands(12, 20, 8, np.float32)
    a[3, 5] = np.nan
    a[7, 2] = np.inf
    out = pointwise.pointwise(a, w, scale, shift)
    assert np.isnan(out[3]).all() and not np.isfinite(out[7]).any()
    assert np.isfinite(np.delete(out, [3, 7], axis=0)).all()


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(1, 1, 1), (5, 3, 40), (70, 13, 33), (1000, 24, 144), (4099, 40, 7)],
                         ids=lambda s: "x".join(map(str, s)))
def test_gradients_of_a_pointwise_convolution(shape, dtype):
    """input_gradient = grad @ w and weight_gradient = grad.T @ x (summed over fixed pixel chunks)."""
    m, c, o = shape
    rng = np.random.default_rng(7)
    x, w, g = (rng.standard_normal(s).astype(dtype) for s in ((m, c), (o, c), (m, o)))
    ref_x = g.astype(np.float64) @ w.astype(np.float64)
    ref_w = g.T.astype(np.float64) @ x.astype(np.float64)
    assert_close(pointwise.input_gradient(g, w.reshape(o, c, 1, 1)), ref_x, f"grad input {shape}", **TOL[dtype])
    gw = pointwise.weight_gradient(g, x)
    assert gw.shape == (o, c) and gw.dtype == dtype
    assert_close(gw, ref_w, f"grad weight {shape}", **TOL[dtype])
    assert np.array_equal(gw, pointwise.weight_gradient(g, x)), "the same sums every time"


def test_weight_gradient_over_many_pixels_stays_accurate_in_float32():
    """Sums over 200k pixels: block partial sums keep float32 within 1e-5 of the float64 result."""
    rng = np.random.default_rng(8)
    x = rng.standard_normal((200_704, 16)).astype(np.float32)
    g = rng.standard_normal((200_704, 24)).astype(np.float32)
    assert_close(pointwise.weight_gradient(g, x), g.T.astype(np.float64) @ x.astype(np.float64),
                 "grad weight", rtol=1e-5)


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("code", [c for c in activation_math.VECTOR_KINDS if c != activations.IDENTITY])
def test_tile_activations_equal_the_scalar_kernel_to_the_bit(code, dtype):
    """The activations the broadcast tiles apply in registers (generated from the same formulas) give the
    elementwise kernel's results bit for bit, at the kinks, exp's range limits, subnormals, infinities and NaN
    included (not -0: a sum that starts from +0 is never -0)."""
    special = [np.nan, np.inf, -np.inf, 0.0, -3.0, 3.0, 6.0, -6.0, 1e-40, -1e-40, 2.9999998, -3.0000002,
               88.72283935546875, 88.7228, 88.7229, -87.33654022216797, -87.3365, -87.3366, 100.0, -100.0, -104.0,
               709.7, -745.2]  # exp's range limits (float32 and float64)
    sweep = np.linspace(-90, 90, 4001)  # every power of two exp scales by (k of -130..130), edges included
    values = np.concatenate([special, np.random.default_rng(0).uniform(-8, 8, 400), sweep]).astype(dtype)
    n = 16
    a = values.reshape(-1, 1)  # K = 1 and unit weights: the tile's sums are the values themselves
    product = pointwise.Pointwise(a.shape[0], np.ones((n, 1), dtype), np.ones(n, dtype), np.zeros(n, dtype),
                                  next(r.name for r in activations.builtin_records() if r.code == code), dtype)
    assert product.kernel.__name__ == "matmul_broadcast"
    out = np.empty((a.shape[0], n), dtype)
    product(a, out)
    expected = np.empty_like(values)
    elementwise.activation_forward(values, expected, code)
    bits = np.uint32 if dtype == np.float32 else np.uint64
    np.testing.assert_array_equal(out.view(bits), np.repeat(expected[:, None], n, axis=1).view(bits))
