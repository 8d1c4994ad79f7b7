"""Batch-norm kernels (statistics, affine + activation, backward; compiled rows and NumPy paths) and global
average pooling, against float64 formulas and torch.

Budget: about 4 s with a warm numba cache.
"""
import numpy as np
import pytest

import excite as ex
from excite.autograd import functions as fn
from excite.kernels import norm as K
from excite.kernels import pooling as P
from excite.kernels.layout import is_channels_last
from oracle import assert_close
from test_kernels_activation import REFERENCE

TOL = {np.float32: dict(rtol=2e-5, atol=2e-5), np.float64: dict(rtol=1e-10, atol=1e-10)}
EPS = 1e-3


def _channels_last(x):
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


# name -> array builder; "cl" and "rows" run the compiled passes, the others NumPy
LAYOUTS = {
    "cl": lambda rng, dt: _channels_last(rng.standard_normal((4, 24, 19, 18)).astype(dt) * 3 + 2),
    "rows": lambda rng, dt: (rng.standard_normal((2100, 24)) * 3 + 2).astype(dt),
    "nchw": lambda rng, dt: (rng.standard_normal((3, 24, 7, 5)) * 3 + 2).astype(dt),
    "ncl": lambda rng, dt: (rng.standard_normal((5, 24, 9)) * 3 + 2).astype(dt),
}


def _axes(x):
    return (0,) + tuple(range(2, x.ndim))


def _pc(v, ndim):
    return v.reshape((1, -1) + (1,) * (ndim - 2))


def reference_batch_norm(x, mean, var, weight, bias, activation):
    """act((x - mean) / sqrt(var + eps) * weight + bias) in float64."""
    xhat = (x.astype(np.float64) - _pc(mean, x.ndim)) / np.sqrt(_pc(var, x.ndim) + EPS)
    return REFERENCE[activation][0](xhat * _pc(weight, x.ndim) + _pc(bias, x.ndim)) if activation else (
        xhat * _pc(weight, x.ndim) + _pc(bias, x.ndim))


def reference_batch_norm_backward(g, x, weight, bias, activation, mean=None, var=None):
    """Gradients (x, weight, bias); batch statistics when mean/var are None (their x-dependence included)."""
    x64, g64 = x.astype(np.float64), g.astype(np.float64)
    axes = _axes(x)
    m = x.size // x.shape[1]
    training = mean is None
    if training:
        mean, var = x64.mean(axis=axes), x64.var(axis=axes)
    invstd = 1 / np.sqrt(var + EPS)
    xhat = (x64 - _pc(mean, x.ndim)) * _pc(invstd, x.ndim)
    z = xhat * _pc(weight, x.ndim) + _pc(bias, x.ndim)
    gz = g64 * REFERENCE[activation][1](z) if activation else g64
    gb = gz.sum(axis=axes)
    gw = (gz * xhat).sum(axis=axes)
    gxhat = gz * _pc(weight, x.ndim)
    if training:
        gx = _pc(invstd, x.ndim) / m * (m * gxhat - _pc(gxhat.sum(axis=axes), x.ndim)
                                        - xhat * _pc((gxhat * xhat).sum(axis=axes), x.ndim))
    else:
        gx = gxhat * _pc(invstd, x.ndim)
    return gx, gw, gb


def _params(rng, c):
    return rng.uniform(0.5, 1.5, c), 0.3 * rng.standard_normal(c)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("activation", [None, "relu", "hardswish", "silu"])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_train_forward_and_backward_match_the_formulas(layout, activation, dtype):
    rng = np.random.default_rng(0)
    x = LAYOUTS[layout](rng, dtype)
    weight, bias = _params(rng, x.shape[1])
    axes = _axes(x)
    mean, var = K.batch_norm_statistics(x)
    assert_close(mean, x.astype(np.float64).mean(axis=axes), "mean", rtol=1e-12, atol=1e-12)
    assert_close(var, x.astype(np.float64).var(axis=axes), "var", rtol=1e-10, atol=1e-10)
    y, mean, var, scale, shift, invstd = K.batch_norm_train(x, weight.astype(dtype), bias.astype(dtype), EPS,
                                                           activation)
    assert y.dtype == dtype and y.strides == np.empty_like(x).strides
    assert_close(y, reference_batch_norm(x, x.astype(np.float64).mean(axis=axes), x.astype(np.float64).var(axis=axes),
                                         weight, bias, activation), "forward", **TOL[dtype])
    g = rng.standard_normal(x.shape).astype(dtype)
    gx, gw, gb = K.batch_norm_backward(g, x, scale, shift, mean, invstd, weight.astype(dtype), True, activation)
    egx, egw, egb = reference_batch_norm_backward(g, x, weight, bias, activation)
    assert_close(gx, egx, "grad x", **TOL[dtype])
    assert_close(gw, egw, "grad weight", **TOL[dtype])
    assert_close(gb, egb, "grad bias", **TOL[dtype])


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("activation", [None, "relu6", "hardsigmoid", "sigmoid"])
@pytest.mark.parametrize("layout", sorted(LAYOUTS))
def test_eval_forward_and_backward_match_the_formulas(layout, activation, dtype):
    rng = np.random.default_rng(1)
    x = LAYOUTS[layout](rng, dtype)
    c = x.shape[1]
    weight, bias = _params(rng, c)
    running_mean, running_var = 2 + rng.standard_normal(c), rng.uniform(4, 12, c)
    y, scale, shift, invstd = K.batch_norm_eval(x, running_mean, running_var, weight, bias, EPS, activation)
    assert_close(y, reference_batch_norm(x, running_mean, running_var, weight, bias, activation), "forward",
                 **TOL[dtype])
    g = rng.standard_normal(x.shape).astype(dtype)
    gx, gw, gb = K.batch_norm_backward(g, x, scale, shift, running_mean, invstd, weight, False, activation)
    egx, egw, egb = reference_batch_norm_backward(g, x, weight, bias, activation, running_mean, running_var)
    assert_close(gx, egx, "grad x", **TOL[dtype])
    assert_close(gw, egw, "grad weight", **TOL[dtype])
    assert_close(gb, egb, "grad bias", **TOL[dtype])


def test_statistics_survive_a_large_mean():
    """Sums of x - pivot: a mean 1e4 times the standard deviation still gives the variance to 1e-6."""
    rng = np.random.default_rng(2)
    x = _channels_last((1e4 + rng.standard_normal((4, 8, 32, 32))).astype(np.float32))
    mean, var = K.batch_norm_statistics(x)
    x64 = x.astype(np.float64)
    assert_close(var, x64.var(axis=(0, 2, 3)), "var", rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("activation", ["relu", "hardswish", "silu", None])
@pytest.mark.parametrize("training", [True, False], ids=["train", "eval"])
def test_fused_function_matches_torch(torch, training, activation):
    rng = np.random.default_rng(3)
    x = _channels_last(rng.standard_normal((4, 16, 23, 21)).astype(np.float32))
    c = x.shape[1]
    weight, bias = (v.astype(np.float32) for v in _params(rng, c))
    rm, rv = rng.standard_normal(c).astype(np.float32), rng.uniform(0.5, 2, c).astype(np.float32)
    tx, tw, tb = (torch.tensor(a.copy(), requires_grad=True) for a in (x, weight, bias))
    trm, trv = torch.tensor(rm.copy()), torch.tensor(rv.copy())
    ty = torch.nn.functional.batch_norm(tx, trm, trv, tw, tb, training, 0.1, EPS)
    if activation:
        ty = getattr(torch.nn.functional, activation)(ty)
    ex_in = [ex.tensor(a.copy(), requires_grad=True) for a in (x, weight, bias)]
    erm, erv = rm.copy(), rv.copy()
    ey = fn.BatchNorm.apply(ex_in[0], ex.tensor(erm), ex.tensor(erv), ex_in[1], ex_in[2], training=training,
                            momentum=0.1, eps=EPS, activation=activation)
    assert_close(ey.numpy(), ty.detach().numpy(), "output")
    g = rng.standard_normal(x.shape).astype(np.float32)
    ty.backward(torch.tensor(g))
    ey.backward(ex.tensor(g))
    for name, a, b in zip(("x", "weight", "bias"), ex_in, (tx, tw, tb)):
        assert_close(a.grad.numpy(), b.grad.numpy(), f"grad {name}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(3, 40, 9, 11), (1, 7, 3, 2)], ids=["compiled", "numpy"])
def test_global_average_pool(shape, dtype):
    x = np.random.default_rng(4).standard_normal(shape).astype(dtype) + 5
    expected = x.astype(np.float64).mean(axis=(2, 3), keepdims=True)
    for xl in (x, _channels_last(x)):
        out = P.adaptive_avg_pool2d(xl, (1, 1))
        assert out.shape == expected.shape and out.dtype == dtype
        assert_close(out, expected, "pooled", **TOL[dtype])
    g = np.random.default_rng(5).standard_normal(expected.shape).astype(dtype)
    gx = P.adaptive_avg_pool2d_backward(g, x.shape, channels_last=True)
    assert is_channels_last(gx)
    assert_close(gx, np.broadcast_to(g / (shape[2] * shape[3]), shape), "grad", **TOL[dtype])
