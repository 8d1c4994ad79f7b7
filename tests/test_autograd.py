"""The autograd engine: deep graphs, accumulation, graph freeing, errors, grad mode, gradcheck, properties."""
import gc
import threading
import weakref

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp

import excite as ex
from excite.autograd import Function
from excite.errors import ExciteError, GradcheckError, InvalidArgumentError, ShapeError
from oracle import assert_close


# ----- the engine ----------------------------------------------------------------------------
def test_chain_of_100000_ops_backprops():
    x = ex.tensor(1.0, requires_grad=True)
    y = x
    for _ in range(100_000):
        y = y * 1.0
    y = y + x  # a second path from the root to the leaf
    y.backward()
    assert x.grad.item() == 2.0


def test_leaf_used_several_times_accumulates_every_path():
    x = ex.tensor([1.0, 2.0, 3.0], requires_grad=True)
    y = (x * x + x * 3.0 + x).sum()  # d/dx = 2x + 4
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [6.0, 8.0, 10.0])


def test_gradients_accumulate_across_backward_calls():
    x = ex.tensor([1.0, -2.0], requires_grad=True)
    (x * 2).sum().backward()
    (x * x).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [2 + 2 * 1.0, 2 + 2 * -2.0])
    x.grad = None
    (x * 5).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [5.0, 5.0])


def test_grad_of_a_leaf_is_its_own_memory():
    x = ex.tensor([1.0, 2.0], requires_grad=True)
    y = x.sum()
    y.backward(retain_graph=True)
    first = x.grad
    y.backward()
    assert x.grad is first or not np.shares_memory(x.grad.numpy(), first.numpy())
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 2.0])
    assert x.grad.numpy().flags.writeable


def test_diamond_graph_accumulates_into_intermediate_nodes():
    x = ex.tensor(3.0, requires_grad=True)
    h = x * x  # used by both branches
    y = h * 2 + h.exp() * 0 + h / 3
    y.backward()
    assert abs(x.grad.item() - (2 + 1 / 3) * 2 * 3.0) < 1e-5


def test_graph_is_freed_after_backward():
    x = ex.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward()
    with pytest.raises(ExciteError, match="second time.*retain_graph=True"):
        y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 4.0])  # the failed call added nothing


def test_partial_reuse_of_a_freed_graph_raises():
    x = ex.tensor([1.0, 2.0], requires_grad=True)
    h = x * x
    h.sum().backward()
    with pytest.raises(ExciteError, match="second time"):
        (h * 2).sum().backward()


def test_retain_graph_allows_a_second_backward():
    x = ex.tensor([1.0, 2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [4.0, 8.0])


def test_backward_frees_the_saved_activations():
    x = ex.randn(1000, requires_grad=True)
    h = x.exp()  # Exp saves its output
    saved = weakref.ref(h.grad_fn.saved_tensors[0])
    loss = (h * 2).sum()
    del h
    loss.backward()
    gc.collect()
    assert saved() is None, "the graph still holds an activation after backward"


def test_graph_does_not_keep_unsaved_intermediates_alive():
    """Nodes link to producer Functions, not to tensors: an activation no backward needs is freed."""
    x = ex.randn(1000, requires_grad=True)
    h = x * 2.0  # Mul saves x and 2.0, not its output
    data = weakref.ref(h.data)
    y = (h + 1.0).sum()  # Add saves nothing
    del h
    gc.collect()
    assert data() is None
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), 2.0)


def test_non_scalar_backward_needs_gradient():
    y = ex.randn(2, 3, requires_grad=True) * 2
    with pytest.raises(ExciteError, match=r"scalar outputs.*\[2, 3\]"):
        y.backward()
    with pytest.raises(ShapeError, match=r"\[2, 3\].*\[3\]"):
        y.backward(ex.ones(3))
    y.backward(ex.ones(2, 3))


def test_backward_on_a_tensor_without_grad_raises():
    with pytest.raises(ExciteError, match="does not require grad"):
        ex.randn(3).sum().backward()
    with pytest.raises(ExciteError, match="does not require grad"):
        with ex.no_grad():
            y = (ex.randn(3, requires_grad=True) * 2).sum()
        y.backward()


def test_backward_on_a_leaf():
    x = ex.tensor(2.0, requires_grad=True)
    x.backward()
    assert x.grad.item() == 1.0


def test_retain_grad_keeps_an_intermediate_gradient():
    x = ex.tensor([1.0, 2.0], requires_grad=True)
    h = x * 3
    h.retain_grad()
    (h * h).sum().backward()
    np.testing.assert_allclose(h.grad.numpy(), [6.0, 12.0])
    np.testing.assert_allclose(x.grad.numpy(), [18.0, 36.0])
    m = x * 2
    (m * 1).sum().backward()
    assert m.grad is None  # not retained


def test_detach_cuts_the_graph_and_shares_memory():
    x = ex.tensor([1.0, 2.0], requires_grad=True)
    d = (x * 2).detach()
    assert not d.requires_grad and d.grad_fn is None and d.is_leaf
    y = (x * d).sum()
    y.backward()
    np.testing.assert_allclose(x.grad.numpy(), [2.0, 4.0])
    d2 = x.detach()
    d2.numpy()[0] = 7.0
    assert x.numpy()[0] == 7.0


def test_requires_grad_rules():
    with pytest.raises(InvalidArgumentError, match="int64"):
        ex.tensor([1, 2]).requires_grad_()
    with pytest.raises(InvalidArgumentError, match="bool"):
        ex.tensor([True]).requires_grad_()
    with pytest.raises(InvalidArgumentError):
        ex.zeros(2, dtype=ex.int64, requires_grad=True)
    x = ex.zeros(2).requires_grad_()
    assert x.requires_grad and x.is_leaf
    y = x * 2
    assert y.requires_grad and not y.is_leaf and y.grad_fn is not None
    with pytest.raises(ExciteError, match="leaf"):
        y.requires_grad_(False)
    assert not x.requires_grad_(False).requires_grad


def test_ops_without_grad_inputs_build_no_graph():
    y = ex.randn(3) * ex.randn(3)
    assert not y.requires_grad and y.grad_fn is None


def test_a_grad_is_none_for_inputs_off_the_path():
    x = ex.randn(3, requires_grad=True)
    z = ex.randn(3, requires_grad=True)
    _ = z * 2
    (x * 2).sum().backward()
    assert z.grad is None


def test_integer_inputs_get_no_gradient():
    x = ex.randn(4, requires_grad=True)
    idx = ex.tensor([0, 2])
    (x[idx] * idx).sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [0.0, 0.0, 2.0, 0.0])
    assert idx.grad is None


def test_custom_function():
    class Cube(Function):
        def forward(self, x):
            self.save_for_backward(x)
            return x ** 3

        def backward(self, grad):
            (x,) = self.saved_tensors
            return (3 * x * x * grad,)

    x = ex.tensor([1.0, -2.0], dtype=ex.float64, requires_grad=True)
    y = Cube.apply(x)
    assert y.grad_fn.name() == "CubeBackward"
    assert ex.autograd.gradcheck(lambda t: Cube.apply(t), (x,))
    y.sum().backward()
    np.testing.assert_allclose(x.grad.numpy(), [3.0, 12.0])


# ----- grad mode ---------------------------------------------------------------------------
def test_no_grad_and_enable_grad_nest():
    x = ex.ones(2, requires_grad=True)
    assert ex.is_grad_enabled()
    with ex.no_grad():
        assert not ex.is_grad_enabled()
        assert not (x * 2).requires_grad
        with ex.enable_grad():
            assert (x * 2).requires_grad
        assert not ex.is_grad_enabled()
    assert ex.is_grad_enabled()


def test_grad_mode_decorators():
    @ex.no_grad()
    def f(t):
        return t * 2, ex.is_grad_enabled()

    @ex.no_grad
    def g(t):
        return t * 2

    @ex.set_grad_enabled(False)
    def h(t):
        return t * 2

    x = ex.ones(2, requires_grad=True)
    y, enabled = f(x)
    assert not enabled and not y.requires_grad
    assert not g(x).requires_grad and not h(x).requires_grad
    assert ex.is_grad_enabled()
    assert f.__name__ == "f"


def test_set_grad_enabled_as_function_and_context():
    with ex.set_grad_enabled(False):
        assert not ex.is_grad_enabled()
    assert ex.is_grad_enabled()
    ex.set_grad_enabled(False)
    try:
        assert not ex.is_grad_enabled()
    finally:
        ex.set_grad_enabled(True)
    assert ex.is_grad_enabled()


def test_grad_mode_restored_after_an_exception():
    with pytest.raises(RuntimeError):
        with ex.no_grad():
            raise RuntimeError("boom")
    assert ex.is_grad_enabled()


def test_grad_mode_is_thread_local():
    seen = {}
    inside = threading.Event()
    release = threading.Event()

    def worker_without_grad():
        with ex.no_grad():
            inside.set()
            release.wait(5)
            seen["worker"] = ex.is_grad_enabled()

    t = threading.Thread(target=worker_without_grad)
    t.start()
    assert inside.wait(5)
    # the other thread is inside no_grad right now; this thread still records graphs
    seen["main"] = ex.is_grad_enabled()
    seen["main_records"] = (ex.ones(1, requires_grad=True) * 2).requires_grad
    release.set()
    t.join()
    assert seen == {"worker": False, "main": True, "main_records": True}

    with ex.no_grad():
        fresh = []
        t = threading.Thread(target=lambda: fresh.append(ex.is_grad_enabled()))
        t.start()
        t.join()
    assert fresh == [True]  # a new thread starts with grad enabled


# ----- gradcheck itself ------------------------------------------------------------------------
def test_gradcheck_reports_a_wrong_backward():
    class WrongSquare(Function):
        def forward(self, x):
            self.save_for_backward(x)
            return x * x

        def backward(self, grad):
            return (grad * self.saved_tensors[0],)  # missing the factor 2

    x = ex.tensor([1.0, 2.0], dtype=ex.float64, requires_grad=True)
    with pytest.raises(GradcheckError, match="analytic 2 vs numerical 4"):
        ex.autograd.gradcheck(lambda t: WrongSquare.apply(t), (x,))
    assert x.grad is None


def test_gradcheck_needs_float64_inputs_that_require_grad():
    with pytest.raises(InvalidArgumentError, match="float64"):
        ex.autograd.gradcheck(lambda t: t * 2, (ex.randn(2, requires_grad=True),))
    with pytest.raises(InvalidArgumentError, match="requires grad"):
        ex.autograd.gradcheck(lambda t: t * 2, (ex.randn(2, dtype=ex.float64),))


def test_gradcheck_handles_non_contiguous_inputs():
    x = ex.from_numpy(np.arange(6.0).reshape(2, 3).T).requires_grad_()  # a transposed view
    assert not x.numpy().flags.c_contiguous
    assert ex.autograd.gradcheck(lambda t: (t * t * t).sum(0), (x,))


# ----- properties --------------------------------------------------------------------------------
@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(shapes=hnp.mutually_broadcastable_shapes(num_shapes=2, min_dims=0, max_dims=4, max_side=3),
       op=st.sampled_from(["add", "sub", "mul", "div"]))
def test_broadcast_grads_match_torch_and_input_shapes(torch, shapes, op):
    (sa, sb), _ = shapes
    rng = np.random.default_rng(0)
    a = rng.standard_normal(sa)
    b = rng.standard_normal(sb) + 3.0  # away from zero for division
    fns = {"add": lambda x, y: x + y, "sub": lambda x, y: x - y, "mul": lambda x, y: x * y,
           "div": lambda x, y: x / y}
    fn = fns[op]
    ea, eb = ex.tensor(a, requires_grad=True), ex.tensor(b, requires_grad=True)
    ta, tb = torch.tensor(a, requires_grad=True), torch.tensor(b, requires_grad=True)
    out_e, out_t = fn(ea, eb), fn(ta, tb)
    upstream = rng.standard_normal(out_t.shape)
    out_e.backward(ex.tensor(upstream))
    out_t.backward(torch.tensor(upstream))
    assert ea.grad.shape == sa and eb.grad.shape == sb
    assert_close(ea.grad.numpy(), ta.grad.numpy(), "grad a", rtol=1e-12)
    assert_close(eb.grad.numpy(), tb.grad.numpy(), "grad b", rtol=1e-12)


@settings(max_examples=30, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(data=hnp.arrays(np.float64, hnp.array_shapes(max_dims=3, max_side=4),
                       elements=st.floats(-3, 3, allow_nan=False)),
       n_terms=st.integers(1, 4), seed=st.integers(0, 1000))
def test_separate_backwards_sum_to_one_backward_of_the_sum(data, n_terms, seed):
    """Accumulating grads of f1, f2, ... in separate backward calls equals one backward of f1 + f2 + ..."""
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal(data.shape) for _ in range(n_terms)]
    terms = [lambda t: (t * weights[0]).sum(), lambda t: (t * t * weights[1 % n_terms]).sum(),
             lambda t: t.exp().mean(), lambda t: (t.sigmoid() * 3).sum()]
    x_separate = ex.tensor(data, requires_grad=True)
    for k in range(n_terms):
        terms[k](x_separate).backward()
    x_joint = ex.tensor(data, requires_grad=True)
    total = terms[0](x_joint)
    for k in range(1, n_terms):
        total = total + terms[k](x_joint)
    total.backward()
    assert_close(x_separate.grad.numpy(), x_joint.grad.numpy(), "accumulated grad", rtol=1e-12)
