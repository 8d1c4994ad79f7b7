"""Activation kernels (compiled one-pass and NumPy paths) against float64 formulas and torch, incl. inf/NaN.

Budget: about 3 s with a warm numba cache.
"""
import numpy as np
import pytest

from excite.kernels import activation as A
from excite.kernels import activations
from excite.kernels.layout import is_channels_last
from oracle import assert_close

TOL = {np.float32: dict(rtol=1e-6, atol=1e-6), np.float64: dict(rtol=1e-12, atol=1e-12)}
LARGE = (4, 16, 24, 24)  # above threads.COMPILED_MIN_ELEMENTS: the compiled kernels run
SMALL = (2, 3, 5)  # NumPy path


def _sigmoid(z):
    with np.errstate(over="ignore"):
        return 1 / (1 + np.exp(-z))


def _normal_cdf(z):
    import math

    return 0.5 * (1 + np.vectorize(math.erf)(z / np.sqrt(2)))


# name -> (forward, derivative), both in float64, written from the definitions
REFERENCE = {
    "relu": (lambda z: np.maximum(z, 0), lambda z: (z > 0) * 1.0),
    "relu6": (lambda z: np.clip(z, 0, 6), lambda z: ((z > 0) & (z < 6)) * 1.0),
    "sigmoid": (_sigmoid, lambda z: _sigmoid(z) * (1 - _sigmoid(z))),
    "hardsigmoid": (lambda z: np.clip(z + 3, 0, 6) / 6, lambda z: ((z > -3) & (z < 3)) / 6),
    "hardswish": (lambda z: z * np.clip(z + 3, 0, 6) / 6,
                  lambda z: np.where(z <= -3, 0.0, np.where(z < 3, z / 3 + 0.5, 1.0))),
    "silu": (lambda z: z * _sigmoid(z), lambda z: _sigmoid(z) * (1 + z * (1 - _sigmoid(z)))),
    "tanh": (np.tanh, lambda z: 1 - np.tanh(z) ** 2),
    # x * Phi(x) and Phi(x) + x * phi(x), Phi / phi the standard normal CDF / density
    "gelu": (lambda z: z * _normal_cdf(z), lambda z: _normal_cdf(z) + z * np.exp(-z * z / 2) / np.sqrt(2 * np.pi)),
}


def _forward(name):
    return lambda x: A.forward(x, name)


def _backward(name):
    """grad * act'(x) the way autograd runs it: from the output where the record saves the output."""
    record = activations.get(name)
    return lambda g, x: A.backward(g, A.forward(x, name) if record.saves_output else x, name)


FORWARD = {name: _forward(name) for name in REFERENCE}
BACKWARD = {name: _backward(name) for name in REFERENCE}


def test_the_reference_covers_every_builtin_activation():
    assert set(REFERENCE) == {r.name for r in activations.builtin_records()}


def _inputs(shape, dtype, seed=0):
    # [-10, 10] covers every linear piece; kinks are avoided by the continuous distribution
    return np.random.default_rng(seed).uniform(-10, 10, shape).astype(dtype)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [LARGE, SMALL], ids=["compiled", "numpy"])
@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_forward_and_backward_match_the_formulas(name, shape, dtype):
    x = _inputs(shape, dtype)
    g = _inputs(shape, dtype, seed=1)
    forward, derivative = REFERENCE[name]
    x64 = x.astype(np.float64)
    y = FORWARD[name](x)
    assert y.dtype == dtype and y.shape == x.shape
    assert_close(y, forward(x64), f"{name} forward", **TOL[dtype])
    gx = BACKWARD[name](g, x)
    assert gx.dtype == dtype
    assert_close(gx, g * derivative(x64), f"{name} backward", **TOL[dtype])


@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_layout_is_kept_and_views_work(name):
    x = _inputs(LARGE, np.float32)
    cl = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    y = FORWARD[name](cl)
    assert is_channels_last(y)
    assert_close(y, FORWARD[name](x), f"{name} channels-last")
    strided = np.repeat(x, 2, axis=3)[..., ::2]  # not contiguous in any order
    assert_close(FORWARD[name](strided), FORWARD[name](x), f"{name} strided view")
    g = _inputs(LARGE, np.float32, seed=1)
    assert_close(BACKWARD[name](g, cl), BACKWARD[name](g, x), f"{name} backward, mixed layouts")


@pytest.mark.filterwarnings("ignore::RuntimeWarning")
@pytest.mark.parametrize("shape", [LARGE, SMALL], ids=["compiled", "numpy"])
@pytest.mark.parametrize("name", sorted(REFERENCE))
def test_special_values_match_torch(torch, name, shape):
    x = _inputs(shape, np.float32).reshape(-1)
    x[:12] = [np.nan, np.inf, -np.inf, 0.0, -0.0, 88.0, -88.0, 100.0, -100.0, 3.0, -3.0, 6.0]
    x = x.reshape(shape)
    g = _inputs(shape, np.float32, seed=1)
    tx = torch.tensor(x, requires_grad=True)
    ty = getattr(torch.nn.functional, name)(tx)
    ty.backward(torch.tensor(g))
    # torch's vectorised erf is off by up to 1.1e-6 around gelu(-3.4) (excite's gelu: 4.5e-7 of the exact value)
    forward_atol = 2e-6 if name == "gelu" else 1e-6
    np.testing.assert_allclose(FORWARD[name](x), ty.detach().numpy(), rtol=1e-6, atol=forward_atol, equal_nan=True)
    # torch's gradient at a NaN input differs between its vectorised and scalar loops: not compared
    defined = ~np.isnan(x)
    # a derivative from the output (1 - y^2) cancels near |y| = 1: both engines' float32 results are
    # within 1e-6 * |grad| of the exact value there, not of each other
    atol = 1e-6 * np.abs(g).max() if activations.get(name).saves_output else 1e-6
    np.testing.assert_allclose(BACKWARD[name](g, x)[defined], tx.grad.numpy()[defined], rtol=1e-6, atol=atol,
                               equal_nan=True)


def test_float32_exp_is_accurate_over_its_whole_range():
    """The vectorisable exp used by sigmoid/silu: within 2 ulp of float64 exp wherever float32 is normal."""
    x = np.linspace(-87.3, 88.7, 1 << 16).astype(np.float32)
    y = A.forward(-x, "sigmoid")  # 1 / (1 + exp(x))
    expected = 1 / (1 + np.exp(x.astype(np.float64)))
    normal = expected > 1.2e-38
    rel = np.abs(y[normal] - expected[normal]) / expected[normal]
    assert rel.max() < 2.5e-7
    assert A.forward(np.full(1 << 16, -89.0, np.float32), "sigmoid").max() == 0.0


def test_exps_scaling_by_ldexp_equals_its_two_products_to_the_bit():
    """`scalar_math.exp` scales by 2**k in one exact step where the target has it (SCALE_BY_LDEXP: AVX-512),
    else as two exact products; both round once, so every machine gets the same bits. Checked here for every
    k the kernel passes (-127..128) on values of the polynomial's range and its edges, whichever way this
    machine compiles; with an LLVM older than 17 (no llvm.ldexp), that the kernels do not use it."""
    import numba

    from excite.kernels.compiled import scalar_math

    if not scalar_math.LDEXP_INTRINSIC:  # an LLVM before 17 has no llvm.ldexp: the kernels must not use it
        assert not scalar_math.SCALE_BY_LDEXP
        return

    @numba.njit(error_model="numpy")
    def both(y, k, one, two):
        for i in range(y.shape[0]):
            one[i] = scalar_math._ldexp(y[i], k[i])
            half = k[i] >> 1
            two[i] = y[i] * scalar_math._power_of_two(half) * scalar_math._power_of_two(k[i] - half)

    y = np.concatenate([np.linspace(0.7, 1.42, 2001), [0.70710677, 1.0, np.nextafter(1.0, 0.0), 1.4142135]])
    y, k = (a.ravel() for a in np.meshgrid(y.astype(np.float32), np.arange(-127, 129, dtype=np.int32)))
    one, two = np.empty_like(y), np.empty_like(y)
    both(y, k, one, two)
    np.testing.assert_array_equal(one.view(np.int32), two.view(np.int32))
    assert np.isinf(one[k == 128]).any() and (one[k == -127] < 1.2e-38).all()  # both edges reached
