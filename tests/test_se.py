"""SqueezeExcitation against torchvision: children and their order, defaults and argument checks, activation specs,
shapes, state_dict, repr, gradients (and gradchecks), and one module shared by threads."""
import functools
import threading

import numpy as np
import pytest

import excite as ex
from excite import nn
from excite.errors import InvalidArgumentError, ShapeError
from oracle import assert_close

CHILD_ORDER = ["avgpool", "fc1", "fc2", "activation", "scale_activation"]


def _pair(torch, torchvision, c=16, s=4, act="ReLU", scale="Sigmoid"):
    """An excite SE and a torchvision SE with the same weights (loaded through state_dict)."""
    tv = torchvision.ops.SqueezeExcitation(c, s, getattr(torch.nn, act), getattr(torch.nn, scale))
    se = nn.SqueezeExcitation(c, s, getattr(nn, act), getattr(nn, scale))
    se.load_state_dict({k: v.detach().numpy() for k, v in tv.state_dict().items()})
    return se, tv


# ----- children and their order ------------------------------------------------------
def test_children_are_torchvisions_in_registration_order(torch, torchvision):
    se = nn.SqueezeExcitation(16, 4)
    tv = torchvision.ops.SqueezeExcitation(16, 4)
    assert [n for n, _ in tv.named_children()] == CHILD_ORDER  # the oracle itself, not a description of it
    assert [n for n, _ in se.named_children()] == [n for n, _ in tv.named_children()]
    assert isinstance(se.avgpool, nn.AdaptiveAvgPool2d) and se.avgpool.output_size == 1
    for conv, (cin, cout) in ((se.fc1, (16, 4)), (se.fc2, (4, 16))):
        assert isinstance(conv, nn.Conv2d)
        assert (conv.in_channels, conv.out_channels, conv.kernel_size) == (cin, cout, (1, 1))
        assert conv.bias is not None
    assert isinstance(se.activation, nn.ReLU)
    assert isinstance(se.scale_activation, nn.Sigmoid)


def test_children_and_named_children_follow_the_registration_order(torch, torchvision):
    se = nn.SqueezeExcitation(8, 2, nn.SiLU, nn.Hardsigmoid)
    tv = torchvision.ops.SqueezeExcitation(8, 2, torch.nn.SiLU, torch.nn.Hardsigmoid)
    assert [type(m).__name__ for m in se.children()] == [type(m).__name__ for m in tv.children()]
    assert [n for n, _ in se.named_children()] == CHILD_ORDER
    assert [n for n, _ in se.named_modules()] == [n for n, _ in tv.named_modules()]


# ----- defaults and argument validation -----------------------------------------------------
def test_default_activations_are_relu_and_sigmoid(torch, torchvision):
    se = nn.SqueezeExcitation(4, 2)
    assert type(se.activation) is nn.ReLU and not se.activation.inplace
    assert type(se.scale_activation) is nn.Sigmoid
    assert repr(se) == repr(torchvision.ops.SqueezeExcitation(4, 2))


@pytest.mark.parametrize("c, s", [(0, 4), (16, 0), (-1, 4), (0, 0)])
def test_channel_counts_below_one_raise_naming_both(c, s):
    with pytest.raises(InvalidArgumentError) as info:
        nn.SqueezeExcitation(c, s)
    assert f"input_channels={c}" in str(info.value) and f"squeeze_channels={s}" in str(info.value)


def test_non_integer_channel_counts_raise():
    with pytest.raises(InvalidArgumentError, match="input_channels=4.0"):
        nn.SqueezeExcitation(4.0, 2)


# ----- activation specs ------------------------------------------------------------------------
def test_activations_may_be_classes_factories_or_instances(torch, torchvision):
    relu = nn.ReLU(inplace=True)
    gate = nn.Hardsigmoid()
    se = nn.SqueezeExcitation(16, 8, relu, gate)
    assert se.activation is relu and se.scale_activation is gate
    # torchvision-style factories: a class, a functools.partial, a lambda
    se = nn.SqueezeExcitation(16, 8, functools.partial(nn.ReLU, inplace=True), lambda: nn.Hardsigmoid())
    tv = torchvision.ops.SqueezeExcitation(16, 8, functools.partial(torch.nn.ReLU, inplace=True),
                                           torch.nn.Hardsigmoid)
    assert repr(se) == repr(tv)


@pytest.mark.parametrize("act, scale, tv_act, tv_scale", [
    ("ReLU", "Hardsigmoid", "ReLU", "Hardsigmoid"),  # MobileNetV3
    ("SiLU", "Sigmoid", "SiLU", "Sigmoid"),  # EfficientNet
])
def test_mobilenet_and_efficientnet_activation_pairs_match_torchvision(torch, torchvision, act, scale, tv_act,
                                                                      tv_scale):
    se, tv = _pair(torch, torchvision, 24, 8, act, scale)
    x = np.random.default_rng(1).standard_normal((2, 24, 5, 5)).astype(np.float32) * 3
    assert_close(se(ex.tensor(x)).numpy(), tv(torch.tensor(x)).detach().numpy(), "output")


@pytest.mark.parametrize("bad", ["relu", 3, lambda: "not a module"])
def test_activation_specs_that_do_not_give_a_module_are_refused(bad):
    with pytest.raises(InvalidArgumentError, match="activation"):
        nn.SqueezeExcitation(4, 2, activation=bad)
    with pytest.raises(InvalidArgumentError, match="scale_activation"):
        nn.SqueezeExcitation(4, 2, scale_activation=bad)


# ----- forward shapes ----------------------------------------------------------------------------
@pytest.mark.parametrize("shape", [(2, 16, 7, 5), (1, 16, 1, 1), (3, 16, 4, 9)])
def test_forward_keeps_the_shape_and_matches_torchvision(torch, torchvision, shape):
    se, tv = _pair(torch, torchvision)
    x = np.random.default_rng(2).standard_normal(shape).astype(np.float32)
    y = se(ex.tensor(x))
    assert y.shape == shape
    assert_close(y.numpy(), tv(torch.tensor(x)).detach().numpy(), "output")


@pytest.mark.parametrize("shape", [(2, 8, 5, 5), (16, 5, 5), (2, 16, 5, 5, 1), (2, 16)])
def test_wrong_rank_or_channels_raise_shape_error_naming_both_shapes(shape):
    se = nn.SqueezeExcitation(16, 4)
    with pytest.raises(ShapeError) as info:
        se(ex.zeros(*shape))
    message = str(info.value)
    assert "[B, 16, H, W]" in message and "[" + ", ".join(map(str, shape)) + "]" in message


# ----- parameter names, state_dict, loading torchvision's checkpoint ---------------------------------
def test_parameter_and_state_dict_keys_equal_torchvisions(torch, torchvision):
    se = nn.SqueezeExcitation(16, 4)
    tv = torchvision.ops.SqueezeExcitation(16, 4)
    keys = ["fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"]
    assert [n for n, _ in se.named_parameters()] == keys == [n for n, _ in tv.named_parameters()]
    assert list(se.state_dict()) == keys == list(tv.state_dict())
    for (n, p), (_, tp) in zip(se.named_parameters(), tv.named_parameters()):
        assert tuple(p.shape) == tuple(tp.shape), n


def test_a_torchvision_state_dict_loads_strictly(torch, torchvision):
    tv = torchvision.ops.SqueezeExcitation(16, 4)
    se = nn.SqueezeExcitation(16, 4)
    before = [p.data for p in se.parameters()]
    result = se.load_state_dict({k: v.detach().numpy() for k, v in tv.state_dict().items()}, strict=True)
    assert result.missing_keys == [] and result.unexpected_keys == []
    for (n, p), arr, tp in zip(se.named_parameters(), before, tv.parameters()):
        assert p.data is arr, f"{n}: loading must copy into the existing array"
        np.testing.assert_array_equal(p.numpy(), tp.detach().numpy())


# ----- train / eval reach the activations ---------------------------------------------------------
def test_train_and_eval_reach_both_activations():
    relu = nn.ReLU()
    se = nn.SqueezeExcitation(8, 2, relu, nn.Hardsigmoid)
    se.eval()
    assert [m.training for m in se.modules()] == [False] * 6
    assert not relu.training and not se.scale_activation.training
    se.train()
    assert relu.training and se.scale_activation.training and se.fc1.training
    se.train(False)
    assert not se.activation.training and not se.scale_activation.training


# ----- repr --------------------------------------------------------------------------------------
@pytest.mark.parametrize("args", [(16, 4, "ReLU", "Sigmoid"), (96, 24, "ReLU", "Hardsigmoid"),
                                  (32, 8, "SiLU", "Sigmoid"), (1, 1, "Hardswish", "Tanh")])
def test_repr_equals_torchvisions(torch, torchvision, args):
    c, s, act, scale = args
    se = nn.SqueezeExcitation(c, s, getattr(nn, act), getattr(nn, scale))
    tv = torchvision.ops.SqueezeExcitation(c, s, getattr(torch.nn, act), getattr(torch.nn, scale))
    assert repr(se) == repr(tv)


# ----- gradients ------------------------------------------------------------------------------------
@pytest.mark.parametrize("act, scale", [("ReLU", "Sigmoid"), ("ReLU", "Hardsigmoid"), ("SiLU", "Sigmoid")])
def test_gradients_match_torchvision(torch, torchvision, act, scale):
    se, tv = _pair(torch, torchvision, 16, 4, act, scale)
    rng = np.random.default_rng(3)
    x = (rng.standard_normal((2, 16, 5, 5)) * 2).astype(np.float32)
    g = rng.standard_normal((2, 16, 5, 5)).astype(np.float32)
    xe = ex.tensor(x, requires_grad=True)
    xt = torch.tensor(x, requires_grad=True)
    ye, yt = se(xe), tv(xt)
    ye.backward(ex.tensor(g))
    yt.backward(torch.tensor(g))
    assert_close(ye.numpy(), yt.detach().numpy(), "output")
    assert_close(xe.grad.numpy(), xt.grad.numpy(), "grad of input")
    for (n, p), tp in zip(se.named_parameters(), tv.parameters()):
        assert_close(p.grad.numpy(), tp.grad.numpy(), f"grad of {n}")


def _se_away_from_kinks(scale):
    """A float64 SE whose ReLU inputs are not near 0 and whose gate inputs are not near +-3 for x below."""
    for seed in range(50):
        ex.manual_seed(seed)
        se = nn.SqueezeExcitation(4, 3, nn.ReLU, scale).double()
        x = ex.tensor(np.random.default_rng(seed).standard_normal((2, 4, 3, 3)) * 2)
        with ex.no_grad():
            hidden = se.fc1(se.avgpool(x))
            pre_gate = se.fc2(se.activation(hidden))
        if np.abs(hidden.numpy()).min() > 1e-2 and np.abs(np.abs(pre_gate.numpy()) - 3).min() > 1e-2:
            return se, x
    raise AssertionError("no seed gave inputs away from the kinks")


@pytest.mark.parametrize("scale", [nn.Sigmoid, nn.Hardsigmoid])
def test_gradcheck_of_the_input_and_every_parameter(scale):
    se, x = _se_away_from_kinks(scale)
    x.requires_grad_()
    params = list(se.parameters())
    assert len(params) == 4
    # gradcheck perturbs the parameters' arrays in place, so the module sees every perturbation
    assert ex.autograd.gradcheck(lambda inp, *ps: se(inp), (x, *params), eps=1e-6, atol=1e-6, rtol=1e-4)


# ----- threads ------------------------------------------------------------------------------------
def test_one_module_shared_by_eight_threads_matches_a_single_thread():
    ex.manual_seed(5)
    se = nn.SqueezeExcitation(16, 4, nn.ReLU, nn.Hardsigmoid)
    rng = np.random.default_rng(4)
    inputs = [rng.standard_normal((2, 16, 6, 6)).astype(np.float32) for _ in range(8)]
    upstream = [rng.standard_normal((2, 16, 6, 6)).astype(np.float32) for _ in range(8)]
    rounds = 4

    def run(i):
        """Even threads: forward under no_grad. Odd threads: forward + backward under enable_grad."""
        x = ex.tensor(inputs[i], requires_grad=i % 2 == 1)
        if i % 2 == 0:
            with ex.no_grad():
                y = se(x)
            return y.numpy().copy(), None, y.requires_grad
        with ex.enable_grad():
            y = se(x)
            y.backward(ex.tensor(upstream[i]))
        return y.numpy().copy(), x.grad.numpy().copy(), y.requires_grad

    expected = []
    expected_param_grads = [np.zeros(p.shape, np.float64) for p in se.parameters()]
    for i in range(8):
        se.zero_grad()
        expected.append(run(i))
        if i % 2:
            for acc, p in zip(expected_param_grads, se.parameters()):
                acc += p.grad.numpy()
    # start from zero grads: creating a leaf's first .grad is the engine's job and is not what R10 pins
    for p in se.parameters():
        p.grad = ex.zeros(*p.shape)

    barrier = threading.Barrier(8)
    results = [[None] * rounds for _ in range(8)]
    errors = []

    def worker(i):
        try:
            for r in range(rounds):
                barrier.wait()
                results[i][r] = run(i)
        except Exception as e:  # noqa: BLE001  (re-raised in the main thread)
            errors.append(e)

    threads = [threading.Thread(target=worker, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for i in range(8):
        for r in range(rounds):
            out, grad, requires_grad = results[i][r]
            np.testing.assert_array_equal(out, expected[i][0], err_msg=f"thread {i} round {r}: output")
            assert requires_grad == (i % 2 == 1), f"thread {i} round {r}: grad mode leaked"
            if grad is not None:
                np.testing.assert_array_equal(grad, expected[i][1], err_msg=f"thread {i} round {r}: input grad")
    # parameter grads from the backward threads all accumulate (summation order may differ)
    for (n, p), acc in zip(se.named_parameters(), expected_param_grads):
        np.testing.assert_allclose(p.grad.numpy(), acc * rounds, rtol=1e-5, atol=1e-5, err_msg=n)
    assert ex.is_grad_enabled()


def test_grad_mode_set_in_one_thread_does_not_leak_into_another():
    se = nn.SqueezeExcitation(4, 2)
    x = ex.randn(1, 4, 3, 3, requires_grad=True)
    disabled = threading.Event()
    checked = threading.Event()
    seen = {}

    def disabler():
        ex.set_grad_enabled(False)
        seen["disabler_output_requires_grad"] = se(x).requires_grad
        disabled.set()
        checked.wait(10)

    def observer():
        disabled.wait(10)
        seen["observer_enabled"] = ex.is_grad_enabled()
        seen["observer_output_requires_grad"] = se(x).requires_grad
        checked.set()

    threads = [threading.Thread(target=disabler), threading.Thread(target=observer)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert seen == {"disabler_output_requires_grad": False, "observer_enabled": True,
                    "observer_output_requires_grad": True}
    assert ex.is_grad_enabled() and se(x).requires_grad


# ----- zero-weight probe -------------------------------------------------------------------------------
@pytest.mark.parametrize("scale", ["Sigmoid", "Hardsigmoid"])
def test_zero_weight_probe_gate_is_one_half(torch, torchvision, scale):
    se = nn.SqueezeExcitation(8, 2, nn.ReLU, getattr(nn, scale))
    tv = torchvision.ops.SqueezeExcitation(8, 2, torch.nn.ReLU, getattr(torch.nn, scale))
    for p in se.parameters():
        nn.init.zeros_(p)
    with torch.no_grad():
        for p in tv.parameters():
            p.zero_()
    x = np.random.default_rng(6).standard_normal((2, 8, 4, 4)).astype(np.float32)
    y = se(ex.tensor(x)).numpy()
    np.testing.assert_array_equal(y, 0.5 * x)
    np.testing.assert_array_equal(y, tv(torch.tensor(x)).detach().numpy())
