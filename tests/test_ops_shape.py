"""Oracle tests for shape ops: reshape/view, flatten, permute, transpose, squeeze, unsqueeze, cat, stack, indexing."""
import numpy as np
import pytest

import excite as ex
from oracle import DTYPES, check_op, randn


def both(fn):
    """The same lambda drives excite and torch when the method names agree."""
    return fn, fn


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("src, dst", [
    ((2, 3, 4), (6, 4)), ((2, 3, 4), (-1,)), ((2, 3, 4), (4, -1)), ((24,), (2, 3, 2, 2)),
    ((5,), (5, 1)), ((), (1, 1)), ((1,), ()), ((2, 6), (3, 1, 4)),
], ids=str)
def test_reshape_and_view(torch, src, dst, dtype):
    check_op(torch, *both(lambda t: t.reshape(dst)), [randn(*src)], dtype=dtype)
    if dst:  # torch's reshape() needs at least one size when sizes are spread
        check_op(torch, *both(lambda t: t.reshape(*dst)), [randn(*src)], dtype=dtype)
    check_op(torch, *both(lambda t: t.view(dst)), [randn(*src)], dtype=dtype)
    check_op(torch, lambda t: ex.reshape(t, dst), lambda t: torch.reshape(t, dst), [randn(*src)], dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, start, end", [
    ((2, 3, 4, 5), 0, -1), ((2, 3, 4, 5), 1, -1), ((2, 3, 4, 5), 1, 2), ((2, 3, 4, 5), -2, -1),
    ((2, 3, 4, 5), 2, 2), ((7,), 0, 0), ((), 0, -1), ((3, 1, 1), 1, 2),
], ids=str)
def test_flatten(torch, shape, start, end, dtype):
    check_op(torch, *both(lambda t: t.flatten(start, end)), [randn(*shape)], dtype=dtype)
    check_op(torch, lambda t: ex.flatten(t, start, end), lambda t: torch.flatten(t, start, end),
             [randn(*shape)], dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, dims", [
    ((2, 3, 4), (2, 0, 1)), ((2, 3, 4), (0, 1, 2)), ((2, 3, 4, 5), (0, 2, 3, 1)), ((2, 3, 4), (-1, 0, -2)),
    ((3,), (0,)), ((), ()),
], ids=str)
def test_permute(torch, shape, dims, dtype):
    if dims:
        check_op(torch, *both(lambda t: t.permute(*dims)), [randn(*shape)], dtype=dtype)
    check_op(torch, *both(lambda t: t.permute(dims)), [randn(*shape)], dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, d0, d1", [((2, 3), 0, 1), ((2, 3, 4), 0, 2), ((2, 3, 4, 5), 1, -1), ((4,), 0, 0)],
                         ids=str)
def test_transpose(torch, shape, d0, d1, dtype):
    check_op(torch, *both(lambda t: t.transpose(d0, d1)), [randn(*shape)], dtype=dtype)
    check_op(torch, lambda t: ex.transpose(t, d0, d1), lambda t: torch.transpose(t, d0, d1), [randn(*shape)],
             dtype=dtype)


def test_t_and_T(torch):
    check_op(torch, *both(lambda t: t.t()), [randn(3, 4)], dtype=np.float64)
    check_op(torch, lambda t: t.T, lambda t: t.T, [randn(3, 4)], dtype=np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, dim", [
    ((1, 3, 1, 4), None), ((1, 3, 1, 4), 0), ((1, 3, 1, 4), 2), ((1, 3, 1, 4), -2), ((1, 3, 1, 4), 1),
    ((2, 1, 1, 3), (1, 2)), ((1,), 0), ((1, 1), None),
], ids=str)
def test_squeeze(torch, shape, dim, dtype):
    if dim is None:
        check_op(torch, *both(lambda t: t.squeeze()), [randn(*shape)], dtype=dtype)
    else:
        check_op(torch, *both(lambda t: t.squeeze(dim)), [randn(*shape)], dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, dim", [((3, 4), 0), ((3, 4), 1), ((3, 4), 2), ((3, 4), -1), ((3, 4), -3), ((), 0)],
                         ids=str)
def test_unsqueeze(torch, shape, dim, dtype):
    check_op(torch, *both(lambda t: t.unsqueeze(dim)), [randn(*shape)], dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes, dim", [
    (((2, 3), (4, 3)), 0), (((2, 3), (2, 1), (2, 5)), 1), (((2, 3, 4), (2, 3, 1)), -1),
    (((1, 2, 3, 3), (1, 5, 3, 3)), 1), (((3,),), 0), (((2, 0), (2, 3)), 1),
], ids=str)
def test_cat(torch, shapes, dim, dtype):
    arrays = [randn(*s, seed=i) for i, s in enumerate(shapes)]
    check_op(torch, lambda *ts: ex.cat(ts, dim), lambda *ts: torch.cat(ts, dim), arrays, dtype=dtype)
    check_op(torch, lambda *ts: ex.cat(list(ts), dim=dim), lambda *ts: torch.cat(list(ts), dim=dim), arrays,
             dtype=dtype, grad=[i % 2 == 0 for i in range(len(arrays))])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape, n, dim", [((2, 3), 3, 0), ((2, 3), 2, 1), ((2, 3), 2, 2), ((2, 3), 4, -1), ((), 3, 0)],
                         ids=str)
def test_stack(torch, shape, n, dim, dtype):
    arrays = [randn(*shape, seed=i) for i in range(n)]
    check_op(torch, lambda *ts: ex.stack(ts, dim), lambda *ts: torch.stack(ts, dim), arrays, dtype=dtype)


def test_cat_uses_an_input_twice(torch):
    check_op(torch, lambda a: ex.cat([a, a * 2, a], 0), lambda a: torch.cat([a, a * 2, a], 0), [randn(2, 3)],
             dtype=np.float64)


INDICES = [
    0, -1, slice(1, 3), slice(None, None, 2), slice(3, 0, -1),
    (0, 1), (slice(None), 2), (Ellipsis, 1), (None, 0), (1, slice(0, 4, 2), None),
    (slice(None), slice(None), slice(1, 2)), (Ellipsis,), (0, 1, 2),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("index", INDICES, ids=repr)
def test_basic_indexing(torch, index, dtype):
    if isinstance(index, slice) and index.step is not None and index.step < 0:
        # torch has no negative steps; compare against the equivalent flip
        check_op(torch, lambda t: t[index], lambda t: t.flip(0)[:3], [randn(4, 5, 3)], dtype=dtype)
        return
    check_op(torch, lambda t: t[index], lambda t: t[index], [randn(4, 5, 3)], dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_advanced_indexing_accumulates_repeats(torch, dtype):
    idx = np.array([0, 2, 0, 0])
    check_op(torch, lambda t: t[idx], lambda t: t[torch.tensor(idx)], [randn(3, 2)], dtype=dtype)
    check_op(torch, lambda t: t[ex.tensor(idx)], lambda t: t[torch.tensor(idx)], [randn(3, 2)], dtype=dtype)
    check_op(torch, lambda t: t[[1, 1, 2]], lambda t: t[[1, 1, 2]], [randn(3, 2)], dtype=dtype)
    rows, cols = np.array([0, 1, 1]), np.array([1, 0, 0])
    check_op(torch, lambda t: t[rows, cols], lambda t: t[torch.tensor(rows), torch.tensor(cols)], [randn(3, 2)],
             dtype=dtype)


def test_boolean_mask_indexing(torch):
    x = randn(3, 4)
    mask = x > 0
    check_op(torch, lambda t: t[ex.tensor(mask)], lambda t: t[torch.tensor(mask)], [x], dtype=np.float64)
    check_op(torch, lambda t: t[t > 0], lambda t: t[t > 0], [x], dtype=np.float64)


def test_expand(torch):
    check_op(torch, *both(lambda t: t.expand(2, 3, 4)), [randn(3, 1)], dtype=np.float64)
    check_op(torch, *both(lambda t: t.expand(2, -1, 4)), [randn(1, 3, 1)], dtype=np.float64)


def test_view_shares_memory_with_its_source():
    x = ex.zeros(2, 3)
    v = x.view(6)
    v.data[0] = 5.0
    assert x.numpy()[0, 0] == 5.0
