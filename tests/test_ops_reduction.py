"""Oracle tests for reductions: sum, mean, amax (dim, keepdim, tuple and negative dims, ties)."""
import numpy as np
import pytest

import excite as ex
from oracle import DTYPES, check_op, randn

DIMS = [0, 1, -1, 3, (0, 2), (-1, 1), (0, 1, 2, 3), ()]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("keepdim", [False, True])
@pytest.mark.parametrize("dim", DIMS, ids=repr)
@pytest.mark.parametrize("op", ["sum", "mean", "amax"])
def test_reduction_dims(torch, op, dim, keepdim, dtype):
    x = randn(2, 3, 4, 5, seed=1)
    check_op(torch, lambda t: getattr(t, op)(dim, keepdim=keepdim),
             lambda t: getattr(t, op)(dim, keepdim=keepdim), [x], dtype=dtype)
    check_op(torch, lambda t: getattr(ex, op)(t, dim, keepdim), lambda t: getattr(torch, op)(t, dim, keepdim), [x],
             dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (1,), (7,), (3, 1), (1, 1, 5), (2, 3, 4, 5)], ids=str)
@pytest.mark.parametrize("op", ["sum", "mean", "amax"])
def test_reduction_small_shapes(torch, op, shape, dtype):
    x = randn(*shape, seed=2)
    check_op(torch, lambda t: getattr(t, op)(), lambda t: getattr(t, op)(), [x], dtype=dtype)
    check_op(torch, lambda t: getattr(t, op)(-1, keepdim=True), lambda t: getattr(t, op)(-1, keepdim=True), [x],
             dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("dim", [None, 0, 1, (0, 1)], ids=repr)
def test_amax_ties_share_the_gradient(torch, dim, dtype):
    """torch.amax splits the gradient evenly between tied maxima."""
    x = np.array([[1.0, 3.0, 3.0, 0.5], [2.0, 2.0, 2.0, 2.0], [-1.0, 3.0, -1.0, 3.0]])
    if dim is None:
        check_op(torch, lambda t: t.amax(), lambda t: t.amax(), [x], dtype=dtype)
    else:
        check_op(torch, lambda t: t.amax(dim), lambda t: t.amax(dim), [x], dtype=dtype)


@pytest.mark.parametrize("keepdim", [False, True])
def test_max_with_dim_sends_the_gradient_to_one_index(torch, keepdim):
    x = np.array([[1.0, 3.0, 3.0], [2.0, 5.0, 0.0]])
    check_op(torch, lambda t: t.max(1, keepdim)[0], lambda t: t.max(1, keepdim)[0], [x], dtype=np.float64)
    ours = ex.tensor(x).max(1, keepdim)[1]
    theirs = torch.tensor(x).max(1, keepdim)[1]
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    check_op(torch, lambda t: t.max(), lambda t: t.max(), [x], dtype=np.float64)


def test_sum_of_int_and_bool_tensors(torch):
    for data in ([[1, 2], [3, 4]], [[True, False], [True, True]]):
        for dim in (None, 0, 1):
            ours = ex.tensor(data).sum() if dim is None else ex.tensor(data).sum(dim)
            theirs = torch.tensor(data).sum() if dim is None else torch.tensor(data).sum(dim)
            assert ours.dtype == ex.int64 and theirs.dtype == torch.int64
            np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


def test_var_matches_torch(torch):
    check_op(torch, lambda t: t.var(1), lambda t: t.var(1), [randn(3, 5)], dtype=np.float64)
    check_op(torch, lambda t: t.var(), lambda t: t.var(), [randn(3, 5)], dtype=np.float64)
    check_op(torch, lambda t: t.var((0, 2), unbiased=False, keepdim=True),
             lambda t: t.var((0, 2), unbiased=False, keepdim=True), [randn(3, 4, 5)], dtype=np.float64)
