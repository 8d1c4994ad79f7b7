"""excite.compile: every registry model compiled equals eager eval and torchvision; plans per shape,
threads, the weight snapshot and refresh, models with ops the compiler has no rule for, bad input."""
import threading

import numpy as np
import pytest

import excite as ex
import excite.nn as nn
import excite.vision.models as exm
from excite.errors import InvalidArgumentError, ShapeError
from test_models import build_pair, copy_weights, randomise_batch_norm, relative_error

ORACLE_MODELS = ["mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "efficientnet_v2_s", "regnet_y_400mf"]
# RegNet-Y 16-128GF (84M-645M parameters) are 400MF-8GF's code at more width; MaxViT compiles at its 224 grid (below)
ALL_MODELS = [n for n in exm.list_models() if n not in ("regnet_y_16gf", "regnet_y_32gf", "regnet_y_128gf", "maxvit_t")]


def _eager(model, x):
    with ex.no_grad():
        return model.eval()(ex.tensor(x)).numpy()


def _oracle_pair(torch, torchvision, name, x):
    """torchvision's model with randomised batch norms calibrated on ``x`` (`randomise_batch_norm`), and excite's
    with its weights; both in eval mode."""
    tv_model, ex_model = build_pair(torch, torchvision, name)
    randomise_batch_norm(torch, tv_model, x)
    copy_weights(tv_model, ex_model)
    return tv_model.eval(), ex_model.eval()


def _random_statistics(model, seed=0):
    """Running statistics and affine parameters far from the defaults, so folding them is visible."""
    rng = np.random.default_rng(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.data[...] = rng.normal(0.0, 0.2, c)
            m.running_var.data[...] = rng.uniform(0.5, 2.0, c)
            m.weight.data[...] = rng.uniform(0.5, 1.5, c)
            m.bias.data[...] = rng.normal(0.0, 0.2, c)
    return model


@pytest.mark.parametrize("name", ORACLE_MODELS)
def test_compiled_equals_eager_and_torchvision(torch, torchvision, name):
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    tv_model, ex_model = _oracle_pair(torch, torchvision, name, x)
    compiled = ex.compile(ex_model, x[:1])
    with torch.no_grad():
        expected = tv_model(torch.from_numpy(x)).numpy()
    for batch in (1, 2):  # the second batch size is planned on its first call
        got = compiled(x[:batch]).numpy()
        assert relative_error(got, _eager(ex_model, x[:batch])) < 1e-5, f"{name} compiled vs eager, batch {batch}"
        assert relative_error(got, expected[:batch]) < 1e-4, f"{name} compiled vs torchvision, batch {batch}"
    assert compiled.plans() == [(1, 3, 64, 64), (2, 3, 64, 64)]


@pytest.mark.parametrize("name", ["mobilenet_v3_small", "efficientnet_b0"])
def test_at_224_the_late_widening_products_take_their_own_kernel_and_stay_with_eager_and_torchvision(
        torch, torchvision, name):
    """At 224 x 224 and batch 1 the late expansions (7 x 7 pixels, channels widened 6x) take the broadcast
    kernel in the compiled graph (`pointwise.KEPT_BROADCAST_MIN_WIDENING`) and the dot kernel eagerly: the
    sums part in order, and the outputs must still agree to 1e-5 (eager) and 1e-4 (torchvision)."""
    from excite.kernels import pointwise

    x = np.random.default_rng(3).standard_normal((1, 3, 224, 224)).astype(np.float32)
    tv_model, ex_model = _oracle_pair(torch, torchvision, name, x)
    compiled = ex.compile(ex_model, x)
    kept_broadcast = [s.name for s in compiled._plan_for(x.shape).steps
                      if getattr(getattr(s, "plan", None), "path", None) == "pointwise"
                      and s.plan.product.kernel.__name__ == "matmul_broadcast"
                      and s.plan.product.m < 100
                      and not pointwise._broadcast_is_faster(s.plan.product.m, s.plan.product.k, s.plan.product.n)]
    assert kept_broadcast, "no product took the kept plans' kernel: the comparison below would be vacuous"
    got = compiled(x).numpy()
    with torch.no_grad():
        expected = tv_model(torch.from_numpy(x)).numpy()
    assert relative_error(got, _eager(ex_model, x)) < 1e-5
    assert relative_error(got, expected) < 1e-4


@pytest.mark.parametrize("name", ALL_MODELS)
def test_every_registry_model_compiles_to_its_eager_output(name):
    """Every registry network but the four above, at a small resolution, batch 1 and 3."""
    ex.manual_seed(0)
    model = _random_statistics(exm.get_model(name, num_classes=10)).eval()
    x = np.random.default_rng(1).standard_normal((3, 3, 32, 32)).astype(np.float32)
    compiled = ex.compile(model, x[:1])
    for batch in (1, 3):
        got = compiled(x[:batch]).numpy()
        assert relative_error(got, _eager(model, x[:batch])) < 1e-5, f"{name}, batch {batch}"


def test_maxvit_compiles_to_its_eager_output():
    """MaxViT-T at the 224 x 224 its attention grids are built for: LayerNorm, GELU, attention and partitions."""
    ex.manual_seed(0)
    model = _random_statistics(exm.maxvit_t(num_classes=10)).eval()
    x = np.random.default_rng(1).standard_normal((1, 3, 224, 224)).astype(np.float32)
    got = ex.compile(model, x)(x).numpy()
    assert relative_error(got, _eager(model, x)) < 1e-5


def test_the_digits_network_and_another_resolution():
    model = exm.mobilenet_v3_digits().eval()
    rng = np.random.default_rng(1)
    compiled = ex.compile(model, rng.standard_normal((1, 3, 32, 32)).astype(np.float32))
    for shape in ((3, 3, 32, 32), (1, 3, 48, 40)):
        x = rng.standard_normal(shape).astype(np.float32)
        assert relative_error(compiled(x).numpy(), _eager(model, x)) < 1e-5, shape


def test_float64_models_compile_in_float64():
    model = exm.mobilenet_v3_small(num_classes=5).double().eval()
    x = np.random.default_rng(2).standard_normal((2, 3, 32, 32))
    out = ex.compile(model, x)(x)
    assert out.dtype == ex.float64
    assert relative_error(out.numpy(), _eager(model, x)) < 1e-12


def test_the_compiled_graph_is_fused():
    model = exm.efficientnet_b0().eval()
    compiled = ex.compile(model, np.zeros((1, 3, 32, 32), np.float32))
    ops = [node.op for node in compiled.graph.nodes]
    assert "batch_norm" not in ops and "activation" not in ops and "add" not in ops  # folded into convolutions
    assert ops.count("se") == 16 and ops.count("conv2d") == 1 + 16 * 2 + 15 + 1  # stem, dw+project, expand, head
    assert "features.1.0.block.1" in str(compiled.graph)  # printed as a table, nodes named by module path


def test_steps_on_planned_buffers_run_bound_and_give_the_same_bits():
    """A step whose arrays are all planned buffers or constants runs as a call with its operands bound once per
    thread (on MobileNetV3-Small every step but the stem, which reads the input; the flatten before the classifier
    becomes a view made once); the bound calls write what the plain steps write, bit for bit."""
    model = _random_statistics(exm.mobilenet_v3_small()).eval()
    x = np.random.default_rng(4).standard_normal((2, 3, 64, 64)).astype(np.float32)
    compiled = ex.compile(model, x)
    plan = compiled._plan_for(x.shape)
    env, calls = plan._workspace()
    unbound = {type(step).__name__ + (":" + step.plan.path if getattr(step, "plan", None) is not None else "")
               for step, call in zip(plan.steps, calls) if call is None}
    assert sum(call is not None for call in calls) == len(calls) - 1
    assert unbound == {"_ConvStep:dense"}
    bound = compiled(x).numpy()
    plan._local.workspace = (env, [None] * len(calls))  # every step the plain way, on the same buffers
    np.testing.assert_array_equal(compiled(x).numpy(), bound)
    np.testing.assert_allclose(bound, _eager(model, x), rtol=1e-5, atol=1e-5 * np.abs(bound).max())


def test_planned_buffers_and_kept_weights_start_on_a_cache_line():
    """Every planned buffer and the weights the kept convolution plans read at every call (the products'
    operands, the depthwise taps, the stem's matrix) start on a 64-byte boundary: a 64-byte vector load
    from anywhere else straddles two cache lines."""
    from excite.kernels import buffers

    model = _random_statistics(exm.efficientnet_b0()).eval()
    x = np.random.default_rng(5).standard_normal((1, 3, 64, 64)).astype(np.float32)
    plan = ex.compile(model, x)._plan_for(x.shape)
    env, _ = plan._workspace()
    starts = [env[plan.index[value]] for value in plan.buffered]
    weights = {}
    for step in plan.steps:
        conv = getattr(step, "plan", None)
        path = getattr(conv, "path", None)
        if path == "pointwise":
            weights.setdefault(path, []).append(conv.product.operand)
        elif path == "depthwise":
            weights.setdefault(path, []).append(conv.taps)
        elif path == "dense":
            weights.setdefault(path, []).append(conv.b)
    assert len(starts) > 10 and set(weights) == {"pointwise", "depthwise", "dense"}
    for array in starts + [w for arrays in weights.values() for w in arrays]:
        assert array.__array_interface__["data"][0] % buffers.ALIGNMENT == 0


def run_in_threads(compiled, inputs, repeats=5):
    """Each input in a thread of its own, ``repeats`` times, all at once; checks that every thread ended
    without an error and returns each thread's last output."""
    results, errors = [None] * len(inputs), []

    def run(i):
        try:
            for _ in range(repeats):
                results[i] = compiled(inputs[i]).numpy()
        except Exception as e:  # noqa: BLE001  (reported below)
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(inputs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not errors and not any(t.is_alive() for t in threads)
    return results


def test_one_compiled_model_serves_several_threads_at_once():
    model = exm.mobilenet_v3_small(num_classes=10).eval()
    rng = np.random.default_rng(3)
    inputs = [rng.standard_normal((b, 3, 32, 32)).astype(np.float32) for b in (1, 2, 1, 3, 2, 1)]
    compiled = ex.compile(model, inputs[0])
    expected = [compiled(x).numpy() for x in inputs]
    for got, want in zip(run_in_threads(compiled, inputs), expected):
        np.testing.assert_array_equal(got, want)


def test_a_compiled_model_is_a_snapshot_until_refreshed():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4), nn.ReLU()).eval()
    x = np.random.default_rng(4).standard_normal((1, 3, 8, 8)).astype(np.float32)
    compiled = ex.compile(model, x)
    before = compiled(x).numpy()
    model[0].weight.data *= 2
    model[1].running_mean.data += 1
    np.testing.assert_array_equal(compiled(x).numpy(), before)
    np.testing.assert_array_equal(compiled(x[[0, 0]]).numpy()[:1], before)  # a new shape: still the snapshot
    compiled.refresh()
    assert relative_error(compiled(x).numpy(), _eager(model, x)) < 1e-6
    assert not np.allclose(compiled(x).numpy(), before)


class _Cube(ex.autograd.Function):
    def forward(self, x):
        return x ** 3

    def backward(self, g):
        raise NotImplementedError


class _Unusual(nn.Module):
    """Ops the compiler has no fused rule for: a custom Function, a permute, a standalone batch norm,
    tensor arithmetic, a softmax, and two outputs."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 6, 3, padding=1, groups=3)
        self.norm = nn.BatchNorm2d(6)
        self.linear = nn.Linear(6, 4)

    def forward(self, x):
        y = _Cube.apply(self.conv(x))
        y = self.norm(y.permute(0, 1, 3, 2)) * 0.5 + 1
        pooled = y.mean((2, 3))
        return self.linear(pooled).softmax(1), y.tanh()


def test_ops_without_a_fused_rule_still_run():
    model = _Unusual().eval()
    model.norm.running_mean.data[...] = np.linspace(-1, 1, 6)
    x = np.random.default_rng(5).standard_normal((2, 3, 5, 7)).astype(np.float32)
    compiled = ex.compile(model, x)
    got = compiled(x)
    with ex.no_grad():
        want = model(ex.tensor(x))
    assert isinstance(got, tuple) and len(got) == 2
    for g, w in zip(got, want):
        assert g.shape == w.shape and relative_error(g.numpy(), w.numpy()) < 1e-6


def test_dict_outputs_keep_their_keys():
    class Heads(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 2, 1)

        def forward(self, x):
            y = self.conv(x)
            return {"features": y, "scores": y.mean((2, 3))}

    x = np.random.default_rng(6).standard_normal((1, 3, 4, 4)).astype(np.float32)
    out = ex.compile(Heads(), x)(x)
    assert list(out) == ["features", "scores"] and out["scores"].shape == (1, 2)


def test_bad_input_names_what_was_compiled_and_what_came():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.ReLU())
    compiled = ex.compile(model, np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(InvalidArgumentError, match="compiled for float32 input, got float64"):
        compiled(np.zeros((1, 3, 8, 8)))
    with pytest.raises(ShapeError, match=r"compiled for input of shape \[N, 3, \.\.\.\] \(4 dims\), got \[1, 5, 8, 8\]"):
        compiled(np.zeros((1, 5, 8, 8), np.float32))
    with pytest.raises(ShapeError, match=r"got \[3, 8, 8\]"):
        compiled(np.zeros((3, 8, 8), np.float32))
    with pytest.raises(InvalidArgumentError, match="must be a Tensor or a NumPy array, got list"):
        compiled([[1.0]])
    with pytest.raises(InvalidArgumentError, match="excite.nn.Module"):
        ex.compile(lambda t: t, np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(InvalidArgumentError, match="floating-point example input"):
        ex.compile(model, np.zeros((1, 3, 8, 8), np.int64))


def test_compiling_leaves_no_eager_activations_in_the_buffer_pool():
    """The capture runs the model eagerly once; the pool's copies of those activations (blocks of 1 MB and
    more: 3.2 MB for the stem's output here) are dropped, not kept for an eager pass that may never come."""
    from excite.kernels import buffers

    model = exm.mobilenet_v3_small(num_classes=10).eval()
    before = buffers.pooled_bytes()
    compiled = ex.compile(model, np.zeros((4, 3, 224, 224), np.float32))
    assert buffers.pooled_bytes() <= before
    with ex.no_grad():
        model(ex.zeros(4, 3, 224, 224))  # (the pool does fill on an eager pass: the check above is not vacuous)
    assert buffers.pooled_bytes() > before
    assert compiled(np.zeros((4, 3, 224, 224), np.float32)).shape == (4, 10)


def test_compiling_leaves_the_model_untouched():
    model = exm.mobilenet_v3_small(num_classes=10).train()
    state = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    ex.compile(model, np.zeros((2, 3, 32, 32), np.float32))
    assert model.training and all(m.training for m in model.modules())
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), state[k], err_msg=k)
