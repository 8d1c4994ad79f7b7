"""Oracle tests for cross_entropy (every option) and dropout (identity cases, mask statistics, gradient)."""
import numpy as np
import pytest

import excite as ex
import excite.nn.functional as F
from oracle import DTYPES, check_op, randn


def _targets(shape, c, seed=0, ignore=None):
    t = np.random.default_rng(seed).integers(0, c, shape).astype(np.int64)
    if ignore is not None:
        t.reshape(-1)[::3] = ignore
    return t


def _ce(torch, logits, target, dtype, grad=True, **kw):
    weight = kw.pop("weight", None)
    arrays = [logits, target] + ([weight] if weight is not None else [])
    check_op(torch,
             lambda x, t, *w: F.cross_entropy(x, t, *w, **kw),
             lambda x, t, *w: torch.nn.functional.cross_entropy(x, t, *w, **kw),
             arrays, dtype=dtype, grad=[grad, False, False])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("smoothing", [0.0, 0.1, 1.0])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 4), (2, 4, 3, 2), (4,)], ids=str)
def test_cross_entropy_class_indices(torch, shape, reduction, smoothing, dtype):
    c = shape[1] if len(shape) > 1 else shape[0]
    target_shape = (shape[0],) + shape[2:] if len(shape) > 1 else ()
    _ce(torch, randn(*shape) * 2, _targets(target_shape, c), dtype, reduction=reduction, label_smoothing=smoothing)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("smoothing", [0.0, 0.2])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(6, 4), (3, 4, 5)], ids=str)
def test_cross_entropy_weight_and_ignore_index(torch, shape, reduction, smoothing, dtype):
    c = shape[1]
    target_shape = (shape[0],) + shape[2:]
    weight = np.array([0.5, 2.0, 1.0, 0.25])
    for ignore in (-100, 2):
        target = _targets(target_shape, c, seed=3, ignore=ignore)
        _ce(torch, randn(*shape), target, dtype, reduction=reduction, label_smoothing=smoothing, weight=weight,
            ignore_index=ignore)
        _ce(torch, randn(*shape), target, dtype, reduction=reduction, label_smoothing=smoothing,
            ignore_index=ignore)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("smoothing", [0.0, 0.3])
@pytest.mark.parametrize("reduction", ["mean", "sum", "none"])
@pytest.mark.parametrize("shape", [(5, 4), (2, 3, 4), (2, 3, 2, 2), (4,)], ids=str)
def test_cross_entropy_probability_targets(torch, shape, reduction, smoothing, dtype):
    class_dim = 1 if len(shape) > 1 else 0
    probs = np.random.default_rng(7).random(shape)
    probs /= probs.sum(axis=class_dim, keepdims=True)
    c = shape[class_dim]
    weight = np.linspace(0.5, 1.5, c)
    for w in (None, weight):
        extra = [] if w is None else [w]
        check_op(torch,
                 lambda x, p, *w: F.cross_entropy(x, p, *w, reduction=reduction, label_smoothing=smoothing),
                 lambda x, p, *w: torch.nn.functional.cross_entropy(x, p, *w, reduction=reduction,
                                                                    label_smoothing=smoothing),
                 [randn(*shape), probs] + extra, dtype=dtype, grad=[True, False, False])


def test_cross_entropy_all_targets_ignored_is_nan_like_torch(torch):
    _ce(torch, randn(3, 4), np.full(3, -100), np.float64)


def test_cross_entropy_large_logits_stay_finite(torch):
    logits = np.array([[1000.0, 0.0, -1000.0], [-500.0, 500.0, 0.0]])
    _ce(torch, logits, np.array([2, 0]), np.float32)


def test_cross_entropy_int32_targets(torch):
    logits = randn(4, 3)
    target = np.array([0, 2, 1, 2], dtype=np.int32)
    check_op(torch, lambda x: F.cross_entropy(x, ex.tensor(target)),
             lambda x: torch.nn.functional.cross_entropy(x, torch.tensor(target, dtype=torch.int64)), [logits])


# ----- dropout ------------------------------------------------------------------------------
def test_dropout_identity_cases():
    x = ex.randn(3, 4, requires_grad=True)
    assert F.dropout(x, p=0.0, training=True) is x
    assert F.dropout(x, p=0.7, training=False) is x


def test_dropout_p_one_zeroes_everything(torch):
    check_op(torch, lambda t: F.dropout(t, 1.0, True), lambda t: torch.nn.functional.dropout(t, 1.0, True),
             [randn(3, 4)])


@pytest.mark.parametrize("p", [0.2, 0.5, 0.8])
def test_dropout_mask_statistics_and_gradient(p):
    n = 200_000
    x = ex.ones(n, requires_grad=True)
    y = F.dropout(x, p=p, training=True)
    kept = y.numpy() != 0
    # surviving entries are scaled by 1/(1-p); the kept fraction is 1-p within 5 sigma
    np.testing.assert_allclose(y.numpy()[kept], 1.0 / (1.0 - p), rtol=1e-6)
    sigma = np.sqrt(p * (1 - p) / n)
    assert abs(kept.mean() - (1 - p)) < 5 * sigma
    upstream = np.random.default_rng(0).standard_normal(n).astype(np.float32)
    y.backward(ex.tensor(upstream))
    mask = y.numpy()  # with x = 1 the output is the scaled mask itself
    np.testing.assert_allclose(x.grad.numpy(), mask * upstream, rtol=1e-6)


def test_dropout_is_reproducible_under_manual_seed():
    ex.manual_seed(123)
    a = F.dropout(ex.ones(100), 0.5).numpy()
    ex.manual_seed(123)
    b = F.dropout(ex.ones(100), 0.5).numpy()
    c = F.dropout(ex.ones(100), 0.5).numpy()
    np.testing.assert_array_equal(a, b)
    assert not np.array_equal(b, c)


@pytest.mark.parametrize("dtype", DTYPES)
def test_dropout_keeps_dtype(dtype):
    x = ex.tensor(np.ones((4, 5), dtype=dtype), requires_grad=True)
    y = F.dropout(x, 0.5)
    assert y.dtype == x.dtype
    y.sum().backward()
    assert x.grad.dtype == x.dtype
