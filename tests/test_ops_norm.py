"""Oracle tests for batch_norm: training and eval, 2-D and 4-D inputs, running-statistics updates."""
import numpy as np
import pytest

import excite as ex
import excite.nn.functional as F
from oracle import DTYPES, TOL, assert_close, check_op, randn

SHAPES = [(4, 3), (2, 3, 5, 4), (8, 5, 1, 1), (3, 2, 7)]


def _stats(c, dtype, seed=5):
    rng = np.random.default_rng(seed)
    return rng.standard_normal(c).astype(dtype), (rng.random(c) + 0.5).astype(dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("affine", ["both", "weight_only", "bias_only", "none"])
@pytest.mark.parametrize("training", [True, False])
@pytest.mark.parametrize("shape", SHAPES, ids=str)
def test_batch_norm(torch, shape, training, affine, dtype):
    c = shape[1]
    x = randn(*shape, seed=1) * 2 + 0.5
    weight, bias = randn(c, seed=2), randn(c, seed=3)
    mean_ex, var_ex = (ex.tensor(a) for a in _stats(c, dtype))
    mean_th, var_th = (torch.tensor(a) for a in _stats(c, dtype))
    use_w, use_b = affine in ("both", "weight_only"), affine in ("both", "bias_only")
    kw = dict(training=training, momentum=0.3, eps=1e-3)

    def ours(t, w, b):
        return F.batch_norm(t, mean_ex, var_ex, w if use_w else None, b if use_b else None, **kw)

    def theirs(t, w, b):
        return torch.nn.functional.batch_norm(t, mean_th, var_th, w if use_w else None, b if use_b else None, **kw)

    check_op(torch, ours, theirs, [x, weight, bias], dtype=dtype, grad=[True, use_w, use_b])
    # training updates the running statistics in place (with the unbiased variance), eval leaves them
    tol = TOL[np.dtype(dtype).type]
    assert_close(mean_ex.numpy(), mean_th.numpy(), "running_mean", exact_dtype=True, **tol)
    assert_close(var_ex.numpy(), var_th.numpy(), "running_var", exact_dtype=True, **tol)
    if not training:
        assert_close(mean_ex.numpy(), _stats(c, dtype)[0], "running_mean unchanged in eval", rtol=0)


def test_batch_norm_training_without_running_stats(torch):
    x = randn(4, 3, 2, 2)
    check_op(torch, lambda t: F.batch_norm(t, None, None, training=True),
             lambda t: torch.nn.functional.batch_norm(t, None, None, training=True), [x], dtype=np.float64)


def test_running_stats_over_several_steps(torch):
    """Momentum updates compound over steps exactly as torch's."""
    c = 4
    mean_ex, var_ex = ex.zeros(c, dtype=ex.float64), ex.ones(c, dtype=ex.float64)
    mean_th, var_th = torch.zeros(c, dtype=torch.float64), torch.ones(c, dtype=torch.float64)
    for step in range(3):
        x = randn(5, c, 3, 3, seed=step) * (step + 1)
        F.batch_norm(ex.tensor(x), mean_ex, var_ex, training=True, momentum=0.1)
        torch.nn.functional.batch_norm(torch.tensor(x), mean_th, var_th, training=True, momentum=0.1)
    assert_close(mean_ex.numpy(), mean_th.numpy(), "running_mean", rtol=1e-12)
    assert_close(var_ex.numpy(), var_th.numpy(), "running_var", rtol=1e-12)


def test_batch_norm_grad_mode_off_still_updates_stats(torch):
    c = 3
    mean_ex, var_ex = ex.zeros(c), ex.ones(c)
    mean_th, var_th = torch.zeros(c), torch.ones(c)
    x = randn(6, c).astype(np.float32)
    with ex.no_grad():
        y = F.batch_norm(ex.tensor(x), mean_ex, var_ex, training=True)
    with torch.no_grad():
        torch.nn.functional.batch_norm(torch.tensor(x), mean_th, var_th, training=True)
    assert not y.requires_grad
    assert_close(mean_ex.numpy(), mean_th.numpy(), "running_mean")
    assert_close(var_ex.numpy(), var_th.numpy(), "running_var")
