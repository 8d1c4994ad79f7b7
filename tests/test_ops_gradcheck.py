"""Finite-difference gradchecks (float64) of every differentiable op, at points away from kinks and ties."""
import numpy as np
import pytest

import excite as ex
import excite.nn.functional as F
from oracle import away_from, distinct, randn


def gradcheck(fn, *arrays, grad=None):
    """gradcheck ``fn`` on float64 copies of ``arrays``; ``grad`` picks the inputs to differentiate."""
    wants = grad if grad is not None else [np.asarray(a).dtype.kind == "f" for a in arrays]
    inputs = [ex.tensor(np.array(a, dtype=np.float64) if w else a, requires_grad=w) for a, w in zip(arrays, wants)]
    assert ex.autograd.gradcheck(fn, inputs)


OPS = {
    "add_broadcast": (lambda a, b: a + b, [randn(2, 3, 1), randn(3, 4)]),
    "sub_broadcast": (lambda a, b: a - b, [randn(3, 1), randn(1, 4)]),
    "mul_se_gate": (lambda a, b: a * b, [randn(2, 3, 2, 2), randn(2, 3, 1, 1)]),
    "div": (lambda a, b: a / b, [randn(3, 4), np.abs(randn(4)) + 0.5]),
    "scalar_ops": (lambda a: (2.0 - a) * 3 / (a * a + 1) + 1 / (a + 4), [randn(5)]),
    "neg": (lambda a: -a, [randn(2, 3)]),
    "pow_int": (lambda a: a ** 3, [randn(4)]),
    "pow_negative": (lambda a: a ** -2, [np.abs(randn(4)) + 0.5]),
    "pow_fractional": (lambda a: a ** 1.5, [np.abs(randn(4)) + 0.5]),
    "rpow": (lambda a: 3.0 ** a, [randn(4)]),
    "matmul_vec_vec": (lambda a, b: a @ b, [randn(3), randn(3)]),
    "matmul_mat_vec": (lambda a, b: a @ b, [randn(2, 3), randn(3)]),
    "matmul_vec_mat": (lambda a, b: a @ b, [randn(3), randn(3, 2)]),
    "matmul_batched_broadcast": (lambda a, b: a @ b, [randn(2, 1, 2, 3), randn(3, 3, 2)]),
    "exp": (lambda a: a.exp(), [randn(2, 3)]),
    "log": (lambda a: a.log(), [np.abs(randn(2, 3)) + 0.2]),
    "sqrt": (lambda a: a.sqrt(), [np.abs(randn(2, 3)) + 0.2]),
    "sum_dims": (lambda a: a.sum((0, -1), keepdim=True) * a.sum(1).sum(), [randn(2, 3, 2)]),
    "mean_dims": (lambda a: a.mean(-2) + a.mean(), [randn(2, 3, 2)]),
    "amax": (lambda a: a.amax(1) + a.amax((0, 2), keepdim=True).sum(), [distinct(2, 3, 2)]),
    "max_dim": (lambda a: a.max(1)[0], [distinct(3, 4)]),
    "reshape_view": (lambda a: a.reshape(3, -1).view(2, 2, 3) * a.view(12).reshape(2, 2, 3), [randn(4, 3)]),
    "flatten": (lambda a: a.flatten(1), [randn(2, 2, 3)]),
    "permute": (lambda a: a.permute(2, 0, 1) * randn(3, 2, 2), [randn(2, 2, 3)]),
    "transpose": (lambda a: a.transpose(0, -1) @ a, [randn(3, 2)]),
    "squeeze_unsqueeze": (lambda a: a.squeeze(1).unsqueeze(0).unsqueeze(-1) * 2, [randn(3, 1, 2)]),
    "cat": (lambda a, b: ex.cat([a, b, a], 1), [randn(2, 2), randn(2, 3)]),
    "stack": (lambda a, b: ex.stack([a, b * 2], -1), [randn(2, 3), randn(2, 3)]),
    "index_basic": (lambda a: a[1:, ::2] * a[0, :2].unsqueeze(0), [randn(3, 4)]),
    "index_advanced_repeats": (lambda a: a[[0, 2, 0]], [randn(3, 2)]),
    "expand": (lambda a: a.expand(2, 3, 4) * randn(2, 3, 4), [randn(3, 1)]),
    "relu": (F.relu, [away_from(randn(3, 4) * 3, [0.0])]),
    "relu6": (F.relu6, [away_from(randn(3, 4) * 4, [0.0, 6.0])]),
    "sigmoid": (F.sigmoid, [randn(3, 4) * 3]),
    "tanh": (F.tanh, [randn(3, 4) * 2]),
    "hardsigmoid": (F.hardsigmoid, [away_from(randn(3, 4) * 4, [-3.0, 3.0])]),
    "hardswish": (F.hardswish, [away_from(randn(3, 4) * 4, [-3.0, 3.0])]),
    "silu": (F.silu, [randn(3, 4) * 3]),
    "softmax": (lambda a: F.softmax(a, 1), [randn(2, 3, 2)]),
    "log_softmax": (lambda a: F.log_softmax(a, -1), [randn(2, 4)]),
    "linear": (F.linear, [randn(2, 3), randn(2, 3), randn(2)]),
    "linear_3d_no_bias": (F.linear, [randn(2, 2, 3), randn(4, 3)]),
}

CONV = {
    "dense": ((1, 2, 4, 4), (2, 2, 3, 3), True, dict(padding=1)),
    "pointwise": ((2, 3, 2, 2), (2, 3, 1, 1), True, {}),
    "depthwise": ((1, 3, 4, 4), (3, 1, 3, 3), True, dict(padding=1, groups=3)),
    "depthwise_multiplier": ((1, 2, 4, 3), (4, 1, 2, 2), False, dict(groups=2)),
    "grouped": ((1, 4, 4, 4), (4, 2, 2, 2), True, dict(groups=2, stride=2)),
    "asym": ((1, 2, 5, 6), (2, 2, 3, 2), True, dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2))),
    "same_even": ((1, 2, 4, 4), (2, 2, 2, 3), False, dict(padding="same")),
}


@pytest.mark.parametrize("name", sorted(OPS))
def test_gradcheck_op(name):
    fn, arrays = OPS[name]
    gradcheck(fn, *arrays)


@pytest.mark.parametrize("name", sorted(CONV))
def test_gradcheck_conv2d(name):
    xs, ws, has_bias, kw = CONV[name]
    arrays = [randn(*xs, seed=1), randn(*ws, seed=2)] + ([randn(ws[0], seed=3)] if has_bias else [])
    gradcheck(lambda *t: F.conv2d(*t, **kw), *arrays)


@pytest.mark.parametrize("kw", [
    dict(output_size=1), dict(output_size=(2, 3)), dict(output_size=(3, 2)),
], ids=repr)
def test_gradcheck_adaptive_avg_pool2d(kw):
    gradcheck(lambda t: F.adaptive_avg_pool2d(t, **kw), randn(1, 2, 5, 4))


@pytest.mark.parametrize("kw", [
    dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=1, count_include_pad=False, ceil_mode=True),
], ids=repr)
def test_gradcheck_avg_pool2d(kw):
    gradcheck(lambda t: F.avg_pool2d(t, **kw), randn(1, 2, 5, 5))


@pytest.mark.parametrize("kw", [
    dict(kernel_size=2), dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=2, stride=1, dilation=2),
], ids=repr)
def test_gradcheck_max_pool2d(kw):
    gradcheck(lambda t: F.max_pool2d(t, **kw), distinct(1, 2, 5, 5))


@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", [(4, 2), (2, 2, 2, 3)], ids=str)
def test_gradcheck_batch_norm(shape, training):
    c = shape[1]

    def fn(x, w, b):
        # fresh running stats every call: training mode updates them in place
        mean, var = ex.tensor(np.array([0.1, -0.2])), ex.tensor(np.array([1.5, 0.7]))
        return F.batch_norm(x, mean, var, w, b, training=training, momentum=0.1, eps=1e-3)

    gradcheck(fn, randn(*shape), randn(c, seed=1), randn(c, seed=2))


def test_gradcheck_dropout():
    def fn(x):
        ex.manual_seed(7)  # the same mask on every evaluation
        return F.dropout(x, 0.4, training=True)

    gradcheck(fn, randn(3, 4))


@pytest.mark.parametrize("kw", [
    dict(), dict(reduction="sum"), dict(reduction="none"), dict(label_smoothing=0.2),
    dict(weight=np.array([0.3, 1.0, 2.0]), ignore_index=1, label_smoothing=0.1),
], ids=repr)
def test_gradcheck_cross_entropy(kw):
    kw = dict(kw)
    weight = kw.pop("weight", None)
    w = None if weight is None else ex.tensor(weight)
    target = ex.tensor(np.array([0, 2, 1, 1]))
    gradcheck(lambda x: F.cross_entropy(x, target, w, **kw), randn(4, 3))
    gradcheck(lambda x: F.cross_entropy(x, target.reshape(2, 2), w, **kw), randn(2, 3, 2))


def test_gradcheck_cross_entropy_probability_targets():
    p = np.random.default_rng(0).random((3, 4))
    target = ex.tensor(p / p.sum(1, keepdims=True))
    gradcheck(lambda x: F.cross_entropy(x, target, label_smoothing=0.1), randn(3, 4))
