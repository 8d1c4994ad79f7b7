"""The NumPy tier's twins of the batch-norm, channel-reduction, elementwise and depthwise kernels (issue 15).

Each twin runs on the arguments its kernel's callers build (`norm`, `se`, `pooling`, `activation`,
`conv`), beside the compiled kernel on its own copies of every array; the arrays the kernel writes
(outputs, in-place inputs, per-block float64 partial sums) and its return value must agree: float32
within 1e-5 and float64 within 1e-12 of the largest magnitude. Budget: a few seconds with a warm
numba cache.
"""
import numpy as np
import pytest

from excite.kernels import activations, numpy_tier
from excite.kernels import conv as K
from excite.kernels import conv_depthwise
from excite.kernels import norm as N
from excite.kernels.compiled import batchnorm, channel_reduce, depthwise_cl, elementwise
from excite.kernels.compiled.activation_math import OUTPUT_DERIVATIVE
from oracle import assert_close

TOL = {np.float32: 1e-5, np.float64: 1e-12}
DTYPES = pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
KINDS = [activations.IDENTITY] + [r.code for r in activations.builtin_records()]
GRAD_KINDS = KINDS + [r.code + OUTPUT_DERIVATIVE for r in activations.builtin_records() if r.saves_output]
KIND_IDS = {activations.IDENTITY: "identity", **{r.code: r.name for r in activations.builtin_records()},
            **{r.code + OUTPUT_DERIVATIVE: r.name + "_at_output" for r in activations.builtin_records()}}
ALL_KINDS = pytest.mark.parametrize("kind", KINDS, ids=lambda k: KIND_IDS[k])


def _copy(arg):
    return np.copy(arg) if isinstance(arg, np.ndarray) else arg


def agree(kernel, args, written, tol, what=None):
    """Run ``kernel`` and its twin on separate copies of ``args``; the args at the indices ``written``
    (the arrays the kernel writes) and the return values must agree within ``tol``. Returns the
    compiled run's arguments."""
    func = kernel.func if hasattr(kernel, "func") else kernel.py_func  # a Kernel, or a helper's dispatcher
    module, name = func.__module__, func.__name__
    twin = numpy_tier.twin(module, name)
    assert twin is not None, f"{module}.{name} has no NumPy twin"
    compiled_args = [_copy(a) for a in args]
    twin_args = [_copy(a) for a in args]
    expected = kernel(*compiled_args)
    actual = twin(*twin_args)
    what = what or name
    assert actual is None and expected is None, f"{what}: returns {actual!r}, the kernel {expected!r}"
    for i in written:
        assert twin_args[i].dtype == compiled_args[i].dtype
        assert_close(twin_args[i], compiled_args[i], f"{what}: argument {i}", rtol=tol)
    return compiled_args


def _rng(*seed):
    return np.random.default_rng(seed)


# ----- elementwise --------------------------------------------------------------------------------
def _activation_input(size, dtype, seed):
    x = _rng(size, seed).standard_normal(size) * 4
    # the kinks, both tails, signed zeros, NaN and infinities
    kinks = np.array([0.0, 3.0, -3.0, 6.0, -0.5, 0.5, 20.0, -20.0, -0.0, 1e30, -1e30, np.nan, np.inf, -np.inf])
    x[:min(size, kinks.size)] = kinks[:size]
    return x.astype(dtype)


@DTYPES
@ALL_KINDS
def test_activation_forward_and_inplace(kind, dtype):
    for size in (1, 37, elementwise.BLOCK + 5):
        x = _activation_input(size, dtype, kind)
        agree(elementwise.activation_forward, [x, np.empty_like(x), kind], [1], TOL[dtype], f"forward {size}")
        agree(elementwise.activation_inplace, [x, kind], [0], TOL[dtype], f"inplace {size}")


@DTYPES
@pytest.mark.parametrize("kind", GRAD_KINDS, ids=lambda k: KIND_IDS[k])
def test_activation_backward(kind, dtype):
    for size in (1, 37, elementwise.BLOCK + 5):
        saved = _activation_input(size, dtype, kind)
        if kind >= OUTPUT_DERIVATIVE:  # the saved output: inside the activation's range
            with np.errstate(over="ignore"):
                saved = (1 / (1 + np.exp(-saved.astype(np.float64)))).astype(dtype)
        grad = _rng(size).standard_normal(size).astype(dtype)
        agree(elementwise.activation_backward, [grad, saved, np.empty_like(saved), kind], [2], TOL[dtype],
              f"backward {size}")


# ----- batch norm ---------------------------------------------------------------------------------
# (M, C, rows per block): one row, blocks of the callers' size, several blocks with a short last
# one, more blocks than rows reach (the callers never pass those, but the kernel zeroes them)
ROWS = [(1, 3, None), (37, 5, None), (300, 70, None), (301, 17, 7), (10, 4, 3)]


def _rows(m, c, dtype, seed=0):
    rng = _rng(m, c, seed)
    return (rng.standard_normal((m, c)) * rng.uniform(0.5, 3, c) + rng.uniform(-5, 5, c)).astype(dtype)


def _blocks(m, c, per_block):
    if per_block is None:
        return N._blocks(m, c)
    return per_block, -(-m // per_block) + (1 if m == 10 else 0)


@DTYPES
@pytest.mark.parametrize("shape", ROWS, ids=lambda s: f"{s[0]}x{s[1]}b{s[2]}")
def test_channel_sums(shape, dtype):
    m, c, per_block = shape
    rows = _rows(m, c, dtype)
    per_block, n_blocks = _blocks(m, c, per_block)
    pivot = rows[0].astype(np.float64)
    partial = np.full((n_blocks, 2, c), np.nan)
    agree(batchnorm.channel_sums, [rows, pivot, partial, per_block], [2], 1e-12)


def _affine(c, dtype, seed=0):
    rng = _rng(c, seed)
    return rng.uniform(0.5, 2, c).astype(dtype), rng.standard_normal(c).astype(dtype)


@DTYPES
@ALL_KINDS
def test_affine_activation_rows(kind, dtype):
    for m, c, _ in ROWS:
        rows = _rows(m, c, dtype)
        scale, shift = _affine(c, dtype)
        agree(batchnorm.affine_activation_rows, [rows, scale, shift, np.empty_like(rows), kind], [3], TOL[dtype])
        agree(batchnorm.affine_activation_rows_inplace, [rows, scale, shift, kind], [0], TOL[dtype])


@DTYPES
@ALL_KINDS
def test_backward_sums(kind, dtype):
    for m, c, per_block in ROWS:
        rows = _rows(m, c, dtype)
        grad = _rows(m, c, dtype, seed=1)
        scale, shift = _affine(c, dtype)
        mean = rows.astype(np.float64).mean(axis=0)
        per_block, n_blocks = _blocks(m, c, per_block)
        args = [grad, rows, scale, shift, mean, np.empty_like(rows), np.full((n_blocks, 2, c), np.nan),
                per_block, kind]
        agree(batchnorm.backward_sums, args, [5], TOL[dtype], f"backward_sums grad_z {m}x{c}")
        # the sums multiply float32 products: their scale is the largest term times the count
        agree(batchnorm.backward_sums, args, [6], TOL[dtype] * (10 if dtype == np.float32 else 1),
              f"backward_sums partial {m}x{c}")


@DTYPES
def test_backward_input_inplace(dtype):
    for m, c, _ in ROWS:
        rows = _rows(m, c, dtype)
        grad_z = _rows(m, c, dtype, seed=1)
        rng = _rng(m, c)
        mean, k, mean_grad, coef = (rng.standard_normal(c).astype(dtype) for _ in range(4))
        agree(batchnorm.backward_input_inplace, [grad_z, rows, mean, k, mean_grad, coef], [0], TOL[dtype])


@pytest.mark.parametrize("stats", [np.float32, np.float64], ids=["stats_f32", "stats_f64"])
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["out_f32", "out_f64"])
def test_inference_affine(stats, dtype):
    c = 19
    rng = _rng(c)
    mean = rng.standard_normal(c).astype(stats)
    var = rng.uniform(0.01, 4, c).astype(stats)
    none = N._empty(np.dtype(stats))
    for weight, bias, conv_bias in [(None, None, None), (1, None, None), (None, 1, None), (1, 1, 1), (None, None, 1)]:
        args = [mean, var] + [none if v is None else rng.standard_normal(c).astype(stats) for v in (weight, bias, conv_bias)]
        agree(batchnorm.inference_affine, args + [1e-5, np.empty(c, dtype), np.empty(c, dtype)], [6, 7], TOL[dtype])


# ----- channel reductions and gates (global pooling, Squeeze-and-Excitation) ------------------------
# (N, P, C): pixels off the kernels' unroll (4, 2 and 8 pixels per step), one pixel, one image
REDUCE = [(1, 1, 1), (2, 7, 13), (3, 50, 40), (1, 9, 16)]


@DTYPES
@pytest.mark.parametrize("shape", REDUCE, ids=lambda s: "x".join(map(str, s)))
def test_channel_reductions_and_gates(shape, dtype):
    n, p, c = shape
    rng = _rng(n, p, c)
    for layout, kernels in (("channels_last", ("channel_means", "gate_forward", "gated_sums", "gate_backward_input")),
                            ("planes", ("plane_means", "plane_gate", "plane_gated_sums", "plane_gate_backward_input"))):
        shape3 = (n, p, c) if layout == "channels_last" else (n, c, p)
        x = (rng.standard_normal(shape3) + 2).astype(dtype)
        grad = rng.standard_normal(shape3).astype(dtype)
        gate = rng.uniform(0, 1, (n, c)).astype(dtype)
        pooled_grad = (rng.standard_normal((n, c)) / p).astype(dtype)
        means, gate_forward, gated_sums, backward = (getattr(channel_reduce, k) for k in kernels)
        agree(means, [x, np.empty((n, c), dtype)], [1], TOL[dtype], f"{layout} means")
        agree(gate_forward, [x, gate, np.empty_like(x)], [2], TOL[dtype], f"{layout} gate")
        agree(gated_sums, [grad, x, np.full((n, c), np.nan)], [2], TOL[dtype], f"{layout} gated sums")
        agree(backward, [grad, gate, pooled_grad, np.empty_like(x)], [3], TOL[dtype], f"{layout} gate backward")


SE_PAIRS = [("relu", "hardsigmoid"), ("silu", "sigmoid"), ("hardswish", None), (None, "relu6")]


@DTYPES
@pytest.mark.parametrize("shape", REDUCE, ids=lambda s: "x".join(map(str, s)))
@pytest.mark.parametrize("pair", SE_PAIRS, ids=lambda p: f"{p[0]}-{p[1]}")
def test_se_inference_block(shape, pair, dtype):
    n, p, c = shape
    squeeze = max(1, c // 4)
    rng = _rng(n, p, c, squeeze)
    x = (rng.standard_normal((n, p, c)) + 1).astype(dtype)
    w1t, b1 = rng.standard_normal((c, squeeze)).astype(dtype), rng.standard_normal(squeeze).astype(dtype)
    w2t, b2 = rng.standard_normal((squeeze, c)).astype(dtype), rng.standard_normal(c).astype(dtype)
    kinds = [activations.code(name) for name in pair]
    agree(channel_reduce.se_inference_cl, [x, w1t, b1, w2t, b2, np.full_like(x, np.nan), *kinds], [5],
          10 * TOL[dtype], f"SE block {pair}")


# ----- depthwise convolution -------------------------------------------------------------------------
# (N, C, H, W, multiplier, kernel, stride, padding, dilation): the SIMD row kernels (3x3 / 5x5, column
# stride 1 / 2) on wide and narrow rows, row dilation, column dilation and stride 3 (the tap-by-tap
# path), 7x7, kernels larger than the image, a 1x1 image, channel multiplier 2
DEPTHWISE = {
    "3x3_s1_wide": (1, 19, 5, 37, 1, 3, (1, 1), (1, 1), (1, 1)),
    "5x5_s2_wide": (2, 21, 6, 67, 1, 5, (2, 2), (2, 2), (1, 1)),
    "3x3_s1_row_dilated": (1, 16, 7, 36, 1, 3, (1, 1), (2, 1), (2, 1)),
    "3x3_s2_narrow": (3, 17, 7, 9, 1, 3, (2, 2), (1, 1), (1, 1)),
    "5x5_s1_narrow": (1, 8, 6, 7, 1, 5, (1, 1), (2, 2), (1, 1)),
    "3x3_dilated_2": (2, 12, 9, 10, 1, 3, (1, 1), (2, 2), (2, 2)),
    "3x3_s3_unpadded": (1, 9, 11, 10, 1, 3, (3, 3), (0, 0), (1, 1)),
    "3x3_image_1x1": (1, 33, 1, 1, 1, 3, (1, 1), (1, 1), (1, 1)),
    "5x5_larger_than_image": (2, 5, 2, 2, 1, 5, (1, 1), (2, 2), (1, 1)),
    "7x7_direct": (1, 9, 5, 6, 1, 7, (1, 1), (3, 3), (1, 1)),
    "3x3_multiplier_2": (2, 6, 8, 9, 2, 3, (1, 1), (1, 1), (1, 1)),
    "5x5_s2_multiplier_2": (1, 5, 9, 8, 2, 5, (2, 2), (2, 2), (1, 1)),
}


def _depthwise_case(case, dtype):
    n, c, h, wd, mult, k, stride, padding, dilation = DEPTHWISE[case]
    rng = _rng(n, c, h, wd, k)
    x = rng.standard_normal((n, c, h, wd)).astype(dtype)
    w = rng.standard_normal((c * mult, 1, k, k)).astype(dtype)
    oh, ow = (K.output_size((h, wd)[i], k, stride[i], padding[i], dilation[i]) for i in range(2))
    return x, w, stride, padding, dilation, oh, ow


def _depthwise_forward_args(case, dtype, kind, with_affine):
    """The arguments `conv_depthwise._depthwise_forward` / `Conv2dPlan` pass to `depthwise_forward_cl`."""
    x, w, stride, padding, dilation, oh, ow = _depthwise_case(case, dtype)
    n, o = x.shape[0], w.shape[0]
    rng = _rng(o)
    bias = rng.standard_normal(o).astype(dtype)
    empty = np.empty(0, dtype)
    scale, shift = (rng.uniform(0.5, 1.5, o).astype(dtype), rng.standard_normal(o).astype(dtype)) if with_affine \
        else (empty, empty)
    band = -(-oh // -(-conv_depthwise.DEPTHWISE_TASKS // n))
    return [conv_depthwise._depthwise_input(x, o // x.shape[1]), conv_depthwise._taps_last(w), bias, scale, shift, kind,
            np.empty((n, oh, ow, o), dtype), *stride, *padding, *dilation, band]


def _depthwise_tol(dtype, k):
    return TOL[dtype] * (k if dtype == np.float32 else 1)  # k * k float32 products, scale ~ sqrt(k * k)


@DTYPES
@pytest.mark.parametrize("case", list(DEPTHWISE))
def test_depthwise_forward(case, dtype):
    k = DEPTHWISE[case][5]
    for kind, with_affine in ((activations.IDENTITY, False), (activations.code("relu6"), True),
                              (activations.code("hardswish"), False)):
        agree(depthwise_cl.depthwise_forward_cl, _depthwise_forward_args(case, dtype, kind, with_affine), [6],
              _depthwise_tol(dtype, k), f"forward {case} kind {KIND_IDS[kind]} affine {with_affine}")


@DTYPES
@ALL_KINDS
def test_depthwise_forward_epilogue(kind, dtype):
    for case in ("3x3_s2_narrow", "7x7_direct"):
        agree(depthwise_cl.depthwise_forward_cl, _depthwise_forward_args(case, dtype, kind, True), [6],
              _depthwise_tol(dtype, DEPTHWISE[case][5]), f"forward {case}")


@DTYPES
@pytest.mark.parametrize("case", list(DEPTHWISE))
def test_depthwise_backward(case, dtype):
    x, w, stride, padding, dilation, oh, ow = _depthwise_case(case, dtype)
    n, c, h, wd = x.shape
    o, _, kh, kw = w.shape
    grad = _rng(o, oh).standard_normal((n, oh, ow, o)).astype(dtype)
    # the scatter as `conv_depthwise._depthwise_backward_input` calls it (there for strides above 2 only)
    agree(depthwise_cl.depthwise_backward_input_cl,
          [grad, conv_depthwise._taps_last(w), np.empty((n, h, wd, o), dtype), *stride, *padding, *dilation], [2],
          _depthwise_tol(dtype, kh), f"backward input {case}")
    partial = np.full((n, kh, kw, o), np.nan)
    agree(depthwise_cl.depthwise_backward_weight_cl,
          [grad, conv_depthwise._depthwise_input(x, o // c), partial, *stride, *padding, *dilation], [2],
          TOL[dtype] * (10 if dtype == np.float32 else 1), f"backward weight {case}")


def test_every_kernel_has_a_twin():
    """The kernels of these four modules (and `inference_affine`, which `norm` calls) all have twins."""
    from excite.kernels.threads import Kernel

    for module in (batchnorm, channel_reduce, depthwise_cl, elementwise):
        names = [name for name, value in vars(module).items()
                 if isinstance(value, Kernel) and getattr(value.func, "__module__", None) == module.__name__]
        if module is batchnorm:
            names.append("inference_affine")
        assert names, module.__name__
        for name in names:
            assert numpy_tier.twin(module.__name__, name) is not None, f"{module.__name__}.{name} has no twin"


@pytest.mark.parametrize("case", ["3x3_s2_narrow", "5x5_s2_multiplier_2", "3x3_dilated_2"])
def test_depthwise_in_image_groups(case, monkeypatch):
    """The twins' image groups (one image each here) give what one group gives."""
    from excite.kernels.numpy_tier import depthwise_cl as twins

    monkeypatch.setattr(twins, "CHUNK_ELEMENTS", 1)
    dtype = np.float64
    agree(depthwise_cl.depthwise_forward_cl, _depthwise_forward_args(case, dtype, activations.code("silu"), True),
          [6], TOL[dtype], f"forward {case}")
    test_depthwise_backward(case, dtype)


# ----- through the callers: every kernel call of `norm`, `activation`, `conv`'s depthwise path, `se` and
# `pooling` answered by the twins gives what the compiled kernels give ---------------------------------
class _Twins:
    """Stands for a `threads.LazyModule` of compiled kernels: each call runs the kernel's twin instead."""

    def __init__(self, module):
        self._module = module
        self._name = module  # as a LazyModule's (threads.call_helper reads it)

    def __getattr__(self, name):
        twin = numpy_tier.twin(self._module, name)
        if twin is None:
            raise AttributeError(f"{self._module}.{name} has no twin")
        return lambda *args, work_ns=None: twin(*args)


def _channels_last(a):
    return np.ascontiguousarray(a.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


def _callers(dtype):
    """What the callers return on one set of inputs, keyed by the call."""
    from excite.kernels import activation as A
    from excite.kernels import pooling, se

    rng = _rng(7)
    n, c, h, wd = 2, 24, 10, 9
    x = _channels_last(rng.standard_normal((n, c, h, wd)).astype(dtype) * 2 + 1)
    grad = _channels_last(rng.standard_normal((n, c, h, wd)).astype(dtype))
    weight, bias = rng.uniform(0.5, 1.5, c).astype(dtype), rng.standard_normal(c).astype(dtype)
    results = {}
    y, mean, var, scale, shift, invstd = N.batch_norm_train(x, weight, bias, 1e-5, "hardswish")
    results.update(bn_y=y, bn_mean=mean, bn_var=var)
    results.update(zip(("bn_gx", "bn_gw", "bn_gb"),
                       N.batch_norm_backward(grad, x, scale, shift, mean, invstd, weight, True, "hardswish")))
    results.update(zip(("bn_eval_gx", "bn_eval_gw", "bn_eval_gb"),
                       N.batch_norm_backward(grad, x, scale, shift, mean, invstd, weight, False, "silu")))
    results.update(zip(("inference_scale", "inference_shift"), N.inference_affine(mean, var, weight, bias, 1e-5, bias)))
    inplace = np.copy(x, order="K")
    results["bn_apply_inplace"] = N.batch_norm_apply(inplace, scale, shift, "relu", out=inplace)
    results["silu"] = A.forward(x, "silu")
    inplace = np.copy(x, order="K")
    results["silu_inplace"] = A.forward(inplace, "silu", out=inplace)
    sig = A.forward(x, "sigmoid")
    results["sigmoid_backward"] = A.backward(grad, sig, "sigmoid")
    results["gelu_backward"] = A.backward(grad, x, "gelu")
    for mult, k, stride in ((1, 3, (1, 1)), (2, 5, (2, 2)), (1, 3, (3, 3))):
        w = rng.standard_normal((c * mult, 1, k, k)).astype(dtype)
        b = rng.standard_normal(c * mult).astype(dtype)
        pad = (k // 2, k // 2)
        out = K.conv2d_forward(x, w, b, stride, pad, (1, 1), c, weight.repeat(mult), bias.repeat(mult), "relu6")
        g = _channels_last(rng.standard_normal(out.shape).astype(dtype))
        results[f"dw{k}_m{mult}_s{stride[0]}"] = out
        results[f"dw{k}_m{mult}_s{stride[0]}_gx"] = K.conv2d_backward_input(g, x.shape, w, stride, pad, (1, 1), c)
        results[f"dw{k}_m{mult}_s{stride[0]}_gw"] = K.conv2d_backward_weight(g, x, w.shape, stride, pad, (1, 1), c)
    results["pool"] = pooling.global_avg_pool2d(x)
    w1, b1 = rng.standard_normal((8, c, 1, 1)).astype(dtype), rng.standard_normal(8).astype(dtype)
    w2, b2 = rng.standard_normal((c, 8, 1, 1)).astype(dtype), rng.standard_normal(c).astype(dtype)
    for layout, xs, gs in (("cl", x, grad), ("planes", np.ascontiguousarray(x), np.ascontiguousarray(grad))):
        out, cache = se.se_forward(xs, w1, b1, w2, b2, "relu", "hardsigmoid")
        results[f"se_{layout}"] = out
        results.update((f"se_{layout}_grad{i}", g) for i, g in enumerate(se.se_backward(gs, xs, w1, w2, cache,
                                                                                          "relu", "hardsigmoid")))
    return results


@DTYPES
def test_callers_get_the_same_results_from_the_twins(dtype, monkeypatch):
    from excite.kernels import activation as A
    from excite.kernels import pooling, se, threads

    for kind in list(threads.COMPILED_MIN_ELEMENTS):
        monkeypatch.setitem(threads.COMPILED_MIN_ELEMENTS, kind, 0)  # every size takes the kernels
    expected = _callers(dtype)
    for module, attr, name in ((N, "batchnorm", "batchnorm"), (A, "elementwise", "elementwise"),
                               (K, "depthwise_cl", "depthwise_cl"), (se, "channel_reduce", "channel_reduce"),
                               (pooling, "channel_reduce", "channel_reduce")):
        monkeypatch.setattr(module, attr, _Twins(name))
    actual = _callers(dtype)
    tol = 1e-4 if dtype == np.float32 else 1e-10  # several kernels in a row
    for key, value in expected.items():
        assert_close(actual[key], value, key, rtol=tol, exact_dtype=True)
