"""The Tensor API: dtypes, conversion to and from NumPy, creation functions, seeding, repr, comparisons."""
import numpy as np
import pytest

import excite as ex


def torch_dtype_name(t):
    return str(t.dtype).replace("torch.", "")


# ----- dtypes -------------------------------------------------------------------------------
@pytest.mark.parametrize("data", [1.5, [1.0, 2.0], [[1, 2.5]], 3, [1, 2], True, [True, False], [], [[1], [2]]],
                         ids=repr)
def test_tensor_infers_dtype_like_torch(torch, data):
    ours, theirs = ex.tensor(data), torch.tensor(data)
    assert str(ours.dtype) == torch_dtype_name(theirs)
    assert ours.shape == tuple(theirs.shape)
    np.testing.assert_array_equal(ours.numpy(), theirs.numpy())


@pytest.mark.parametrize("array", [np.zeros(3, np.float64), np.zeros(2, np.int32), np.zeros(2, np.uint8),
                                   np.float64(1.5), np.zeros((2, 2), np.float32)], ids=lambda a: str(a.dtype))
def test_tensor_from_numpy_data_keeps_its_dtype(torch, array):
    assert str(ex.tensor(array).dtype) == torch_dtype_name(torch.tensor(array))


def test_explicit_dtype_and_aliases():
    assert ex.tensor([1, 2], dtype=ex.float64).dtype == np.float64
    assert ex.tensor([1.7], dtype=ex.int64).numpy().tolist() == [1]
    assert ex.tensor([1], dtype=float).dtype == ex.float32
    assert ex.tensor([1], dtype=bool).dtype == ex.bool
    assert ex.float is ex.float32 and ex.double is ex.float64 and ex.long is ex.int64
    assert ex.tensor([0, 2]).bool().numpy().tolist() == [False, True]


def test_float32_is_the_default_everywhere():
    for t in (ex.zeros(2), ex.ones(2), ex.empty(2), ex.full((2,), 1.5), ex.rand(2), ex.randn(2),
              ex.arange(0.0, 1.0, 0.5), ex.tensor([0.5])):
        assert t.dtype == ex.float32


def test_float64_is_kept_by_ops():
    x = ex.randn(2, 3, dtype=ex.float64, requires_grad=True)
    y = (x * 2 + 1).exp().sum(0).mean()
    assert y.dtype == ex.float64
    y.backward()
    assert x.grad.dtype == ex.float64


def test_casts_are_differentiable():
    x = ex.tensor([1.0, 2.0], requires_grad=True)
    y = x.double() * 3
    assert y.dtype == ex.float64
    y.sum().backward()
    assert x.grad.dtype == ex.float32 and x.grad.numpy().tolist() == [3.0, 3.0]
    assert x.to(ex.float32) is x and x.to("cpu") is x
    assert x.to(dtype=ex.float64).dtype == ex.float64


# ----- NumPy interop --------------------------------------------------------------------------
def test_from_numpy_shares_memory_both_ways():
    a = np.arange(6.0).reshape(2, 3)
    t = ex.from_numpy(a)
    assert t.dtype == np.float64 and t.shape == (2, 3)
    a[0, 0] = 42.0
    assert t.numpy()[0, 0] == 42.0
    t.numpy()[1, 2] = -1.0
    assert a[1, 2] == -1.0
    assert t.numpy() is a


def test_tensor_copies_its_data():
    a = np.zeros(3, dtype=np.float32)
    t = ex.tensor(a)
    a[0] = 1.0
    assert t.numpy()[0] == 0.0
    u = ex.tensor(t)
    t.numpy()[1] = 5.0
    assert u.numpy()[1] == 0.0


def test_numpy_array_protocol():
    t = ex.tensor([[1.0, 2.0]])
    assert np.asarray(t).dtype == np.float32
    assert np.asarray(t, dtype=np.float64).dtype == np.float64
    assert np.add(np.ones(2, np.float32), t.numpy()).shape == (1, 2)


def test_item_and_python_conversions():
    assert ex.tensor(2.5).item() == 2.5 and isinstance(ex.tensor(2.5).item(), float)
    assert ex.tensor([[7]]).item() == 7 and isinstance(ex.tensor([7]).item(), int)
    assert ex.tensor(True).item() is True
    assert float(ex.tensor([1.5])) == 1.5 and int(ex.tensor(3)) == 3
    assert [10, 20, 30][ex.tensor(1)] == 20
    assert ex.tensor([[1, 2], [3, 4]]).tolist() == [[1, 2], [3, 4]]
    with pytest.raises(ex.InvalidArgumentError):
        bool(ex.tensor([1.0, 2.0]))
    assert bool(ex.tensor([1.0])) is True


def test_metadata():
    t = ex.zeros(2, 3, 4)
    assert t.shape == (2, 3, 4) and t.ndim == 3 and t.dim() == 3 and t.numel() == 24
    assert t.size() == (2, 3, 4) and t.size(1) == 3 and t.size(-1) == 4 and len(t) == 2
    assert t.is_leaf and t.grad is None and t.grad_fn is None and not t.requires_grad
    assert t.is_floating_point() and not ex.tensor([1]).is_floating_point()
    assert [tuple(row.shape) for row in t] == [(3, 4), (3, 4)]


# ----- creation -------------------------------------------------------------------------------
def test_creation_functions_match_torch(torch):
    pairs = [
        (ex.zeros(2, 3), torch.zeros(2, 3)), (ex.zeros((2, 3)), torch.zeros((2, 3))),
        (ex.ones([4]), torch.ones([4])), (ex.full((2, 2), 7), torch.full((2, 2), 7)),
        (ex.full((2,), True), torch.full((2,), True)), (ex.full((2,), 1.5), torch.full((2,), 1.5)),
        (ex.arange(5), torch.arange(5)), (ex.arange(1, 7, 2), torch.arange(1, 7, 2)),
        (ex.arange(0, 1, 0.25), torch.arange(0, 1, 0.25)), (ex.arange(3, dtype=ex.float64), torch.arange(3.0).double()),
        (ex.zeros(0, 3), torch.zeros(0, 3)), (ex.ones(()), torch.ones(())),
    ]
    for ours, theirs in pairs:
        assert str(ours.dtype) == torch_dtype_name(theirs)
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    assert ex.empty(3, 2).shape == (3, 2)
    assert ex.zeros(2, dtype=ex.int64).dtype == ex.int64


def test_like_functions(torch):
    base = ex.tensor(np.arange(6, dtype=np.float64).reshape(2, 3))
    for name in ("zeros_like", "ones_like", "empty_like", "rand_like", "randn_like"):
        t = getattr(ex, name)(base)
        assert t.shape == (2, 3) and t.dtype == ex.float64
    assert ex.zeros_like(base, dtype=ex.float32).dtype == ex.float32
    np.testing.assert_array_equal(ex.full_like(base, 4).numpy(), torch.full_like(torch.tensor(base.numpy()), 4))
    np.testing.assert_array_equal(ex.ones_like(base).numpy(), np.ones((2, 3)))
    assert ex.zeros_like(base, requires_grad=True).requires_grad


def test_random_ranges():
    u = ex.rand(10_000).numpy()
    assert u.min() >= 0 and u.max() < 1 and abs(u.mean() - 0.5) < 0.02
    n = ex.randn(10_000).numpy()
    assert abs(n.mean()) < 0.05 and abs(n.std() - 1) < 0.05
    r = ex.randint(3, 7, (1000,)).numpy()
    assert r.dtype == np.int64 and r.min() == 3 and r.max() == 6
    assert sorted(ex.randperm(6).numpy().tolist()) == list(range(6))


def test_manual_seed_reproducibility():
    def draw():
        return [ex.rand(3).numpy(), ex.randn(2, 2).numpy(), ex.randint(0, 100, (5,)).numpy(),
                ex.randperm(5).numpy(), ex.randn_like(ex.zeros(2)).numpy()]

    ex.manual_seed(1234)
    first = draw()
    ex.manual_seed(1234)
    second = draw()
    ex.manual_seed(4321)
    other = draw()
    for a, b in zip(first, second):
        np.testing.assert_array_equal(a, b)
    assert not np.array_equal(first[0], other[0])


def test_rng_state_roundtrip():
    state = ex.get_rng_state()
    a = ex.rand(4).numpy()
    ex.set_rng_state(state)
    np.testing.assert_array_equal(ex.rand(4).numpy(), a)


def test_requires_grad_at_creation():
    for t in (ex.zeros(2, requires_grad=True), ex.randn(2, requires_grad=True), ex.tensor([1.0], requires_grad=True)):
        assert t.requires_grad and t.is_leaf


# ----- repr, comparisons --------------------------------------------------------------------
def test_repr_like_torch(torch):
    for data in ([1.0, 2.5], [[1, 2], [3, 4]], [True, False], 3.0, [1.0, 2.0], [[0.1, -20.0], [3.0, 1e-3]],
                 [1e-5, 1.0], [1e9, 1.0], [float("nan"), 1.5, -float("inf")], [0.0, -0.0, 1.0], -7.25):
        assert repr(ex.tensor(data)) == repr(torch.tensor(data))
    assert repr(ex.tensor([1.0], requires_grad=True)) == "tensor([1.], requires_grad=True)"
    assert repr(ex.tensor([1.0], dtype=ex.float64)) == "tensor([1.], dtype=excite.float64)"
    y = ex.tensor([1.0], requires_grad=True) * 2
    assert repr(y) == "tensor([2.], grad_fn=<MulBackward>)"


@pytest.mark.parametrize("op", ["__eq__", "__ne__", "__lt__", "__le__", "__gt__", "__ge__"])
def test_comparisons_return_bool_tensors(torch, op):
    a, b = np.array([[1.0, 2.0, 3.0]]), np.array([[2.0], [1.0]])
    for other_ex, other_th in ((ex.tensor(b), torch.tensor(b)), (2.0, 2.0)):
        ours = getattr(ex.tensor(a), op)(other_ex)
        theirs = getattr(torch.tensor(a), op)(other_th)
        assert isinstance(ours, ex.Tensor) and ours.dtype == ex.bool
        assert not ours.requires_grad
        np.testing.assert_array_equal(ours.numpy(), theirs.numpy())
    x = ex.tensor([1.0, 2.0], requires_grad=True)
    assert not getattr(x, op)(1.5).requires_grad


def test_comparison_with_non_numbers_like_torch():
    t = ex.ones(2)
    assert (t == None) is False and (t != "a") is True  # noqa: E711
    with pytest.raises(TypeError):
        t < "a"


def test_tensors_are_hashable_by_identity():
    a, b = ex.zeros(1), ex.zeros(1)
    assert len({a, b}) == 2


def test_in_place_updates_for_optimizers():
    w = ex.ones(3, requires_grad=True)
    with ex.no_grad():
        w.sub_(ex.tensor([1.0, 2.0, 3.0]), alpha=0.5).mul_(2)
    np.testing.assert_allclose(w.numpy(), [1.0, 0.0, -1.0])  # (1 - 0.5 * [1, 2, 3]) * 2
    with pytest.raises(ex.ExciteError, match="in place"):
        w[0] = 5.0
    with ex.no_grad():
        w[0] = 5.0
    assert w.numpy()[0] == 5.0
    w.zero_()
    assert not w.numpy().any()
