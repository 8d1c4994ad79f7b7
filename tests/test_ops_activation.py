"""Oracle tests for activations (relu, relu6, sigmoid, tanh, hardsigmoid, hardswish, silu) and softmaxes."""
import numpy as np
import pytest

import excite as ex
import excite.nn.functional as F
from oracle import DTYPES, away_from, check_op, randn

# name -> (excite fn, torch fn name, kinks to keep inputs away from)
ACTIVATIONS = {
    "relu": (F.relu, (0.0,)),
    "relu6": (F.relu6, (0.0, 6.0)),
    "sigmoid": (F.sigmoid, ()),
    "tanh": (F.tanh, ()),
    "hardsigmoid": (F.hardsigmoid, (-3.0, 3.0)),
    "hardswish": (F.hardswish, (-3.0, 3.0)),
    "silu": (F.silu, ()),
}


def _inputs(shape, kinks, seed=0):
    # spread over [-8, 8] so every linear piece (below -3, inside, above 3 and 6) is exercised
    x = randn(*shape, seed=seed) * 4.0
    return away_from(x, kinks)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (17,), (2, 3, 4, 5), (1, 8, 1, 1)], ids=str)
@pytest.mark.parametrize("name", sorted(ACTIVATIONS))
def test_activation(torch, name, shape, dtype):
    fn, kinks = ACTIVATIONS[name]
    th = getattr(torch.nn.functional, name)
    check_op(torch, fn, th, [_inputs(shape, kinks)], dtype=dtype, rtol=_rtol(name, dtype))


def _rtol(name, dtype):
    # torch's hardsigmoid backward multiplies by the float32 constant 1.0f/6 even in float64
    # (0.16666667163...), 3e-8 relative away from the exact 1/6 we use; gradcheck covers the maths
    return 1e-7 if name == "hardsigmoid" and dtype == np.float64 else None


@pytest.mark.parametrize("name", ["relu", "relu6", "hardsigmoid", "hardswish"])
def test_activation_at_the_kinks_matches_torch(torch, name):
    """Exactly at a kink both libraries pick the same one-sided derivative
    (torch 2.14 hardswish: 0 for x <= -3, x/3 + 1/2 for -3 < x < 3, 1 for x >= 3)."""
    x = np.array([-6.0, -3.0, 0.0, 3.0, 6.0, 7.0])
    fn = ACTIVATIONS[name][0]
    check_op(torch, fn, getattr(torch.nn.functional, name), [x], dtype=np.float64, rtol=_rtol(name, np.float64))


@pytest.mark.parametrize("name", ["relu", "sigmoid", "tanh"])
def test_tensor_methods_and_top_level(torch, name):
    x = _inputs((3, 4), (0.0,))
    check_op(torch, lambda t: getattr(t, name)(), lambda t: getattr(t, name)(), [x], dtype=np.float32)
    check_op(torch, getattr(ex, name), getattr(torch, name), [x], dtype=np.float32)


def test_extreme_inputs_stay_finite(torch):
    x = np.array([-1000.0, -80.0, -20.0, 0.0, 20.0, 80.0, 1000.0])
    for name in ("sigmoid", "silu", "tanh"):
        fn = ACTIVATIONS[name][0]
        check_op(torch, fn, getattr(torch.nn.functional, name), [x], dtype=np.float32)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, dim", [((5,), 0), ((3, 4), 1), ((3, 4), 0), ((2, 3, 4, 5), 1), ((2, 3, 4), -1),
                                        ((2, 1), 1)], ids=str)
@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_family(torch, name, shape, dim, dtype):
    x = randn(*shape, seed=3) * 3
    check_op(torch, lambda t: getattr(F, name)(t, dim), lambda t: getattr(torch.nn.functional, name)(t, dim), [x],
             dtype=dtype)
    check_op(torch, lambda t: getattr(t, name)(dim), lambda t: getattr(t, name)(dim), [x], dtype=dtype)


@pytest.mark.parametrize("name", ["softmax", "log_softmax"])
def test_softmax_is_stable_for_large_logits(torch, name):
    x = np.array([[1000.0, 0.0, -1000.0], [50.0, 50.0, 49.0]])
    check_op(torch, lambda t: getattr(F, name)(t, 1), lambda t: getattr(torch.nn.functional, name)(t, 1), [x],
             dtype=np.float32)


def test_activations_on_int_tensors_promote_like_torch(torch):
    for name in ("sigmoid", "tanh"):
        ours = getattr(ex.tensor([-1, 0, 2]), name)()
        theirs = getattr(torch.tensor([-1, 0, 2]), name)()
        assert ours.dtype == ex.float32 and theirs.dtype == torch.float32
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6)
