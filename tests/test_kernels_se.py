"""The fused Squeeze-and-Excitation Function against torchvision's SqueezeExcitation, outputs and all gradients.

Budget: about 3 s with a warm numba cache.
"""
import numpy as np
import pytest

import excite as ex
from excite.autograd.functions.se import SqueezeExcitation
from excite.kernels import se as K
from excite.kernels.layout import is_channels_last
from oracle import assert_close

TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-10)}
# MobileNetV3's and EfficientNet's SE (plus two other activation pairs the kernels support)
CONFIGS = {"mobilenet": ("relu", "hardsigmoid"), "efficientnet": ("silu", "sigmoid"),
           "relu6_sigmoid": ("relu6", "sigmoid"), "hardswish_hardsigmoid": ("hardswish", "hardsigmoid")}
TORCH_ACTIVATIONS = {"relu": "ReLU", "relu6": "ReLU6", "silu": "SiLU", "hardswish": "Hardswish",
                     "sigmoid": "Sigmoid", "hardsigmoid": "Hardsigmoid"}


def _channels_last(x):
    return np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("layout", ["channels_last", "nchw"])
@pytest.mark.parametrize("shape", [(3, 24, 9, 10), (1, 8, 3, 3)], ids=["compiled", "numpy"])
@pytest.mark.parametrize("config", sorted(CONFIGS))
def test_matches_torchvision(torch, torchvision, config, shape, layout, dtype):
    act, gate = CONFIGS[config]
    c, s = shape[1], max(1, shape[1] // 4)
    torch.manual_seed(0)
    tv = torchvision.ops.SqueezeExcitation(c, s, getattr(torch.nn, TORCH_ACTIVATIONS[act]),
                                           getattr(torch.nn, TORCH_ACTIVATIONS[gate]))
    tv = tv.to(torch.float64 if dtype == np.float64 else torch.float32)
    with torch.no_grad():  # biases large enough that every activation piece is reached
        tv.fc1.bias.uniform_(-2, 2)
        tv.fc2.bias.uniform_(-4, 4)
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 3).astype(dtype)
    x = _channels_last(x) if layout == "channels_last" else x
    tx = torch.tensor(np.ascontiguousarray(x), requires_grad=True)
    ty = tv(tx)
    params = [tv.fc1.weight, tv.fc1.bias, tv.fc2.weight, tv.fc2.bias]
    ex_in = [ex.from_numpy(x).requires_grad_()] + [ex.tensor(p.detach().numpy().copy(), requires_grad=True)
                                                   for p in params]
    ey = SqueezeExcitation.apply(*ex_in, activation=act, scale_activation=gate)
    tol = dict(TOL[dtype])
    if gate == "hardsigmoid" and dtype == np.float64:
        # torch's hardsigmoid backward multiplies by the float32 constant 1.0f/6 even in float64
        tol = dict(rtol=1e-7, atol=1e-7)
    assert_close(ey.numpy(), ty.detach().numpy(), "output", **TOL[dtype])
    g = rng.standard_normal(shape).astype(dtype)
    ty.backward(torch.tensor(g))
    ey.backward(ex.tensor(g))
    for name, a, b in zip(("x", "fc1.weight", "fc1.bias", "fc2.weight", "fc2.bias"), ex_in, [tx] + params):
        assert a.grad.dtype == dtype
        assert_close(a.grad.numpy(), b.grad.numpy(), f"grad {name}", **tol)


def test_no_graph_and_no_saved_arrays_under_no_grad():
    x = ex.randn(2, 16, 8, 8)
    w1, b1, w2, b2 = ex.randn(4, 16, 1, 1), ex.randn(4), ex.randn(16, 4, 1, 1), ex.randn(16)
    for t in (w1, b1, w2, b2):
        t.requires_grad_()
    with ex.no_grad():
        y = SqueezeExcitation.apply(x, w1, b1, w2, b2, activation="relu", scale_activation="hardsigmoid")
    assert y.grad_fn is None and not y.requires_grad


# ----- the module at sizes where the compiled kernels run, in both layouts; the inference kernel --------
def _layouts(x):
    return {"planes": x, "channels_last": _channels_last(x)}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("config", ["mobilenet", "efficientnet"])
@pytest.mark.parametrize("shape", [(2, 24, 13, 11), (1, 240, 7, 7)], ids=lambda s: "x".join(map(str, s)))
def test_module_inference_and_training_match_torchvision_in_both_layouts(torch, torchvision, shape, config, dtype):
    act, gate = CONFIGS[config]
    c, s = shape[1], max(1, shape[1] // 4)
    se = ex.nn.SqueezeExcitation(c, s, getattr(ex.nn, TORCH_ACTIVATIONS[act]), getattr(ex.nn, TORCH_ACTIVATIONS[gate]))
    tv = torchvision.ops.SqueezeExcitation(c, s, getattr(torch.nn, TORCH_ACTIVATIONS[act]),
                                           getattr(torch.nn, TORCH_ACTIVATIONS[gate]))
    tv.load_state_dict({k: torch.tensor(v.numpy()) for k, v in se.state_dict().items()})
    if dtype == np.float64:
        se, tv = se.double(), tv.double()
    rng = np.random.default_rng(0)
    x = (rng.standard_normal(shape) * 2).astype(dtype)
    g = rng.standard_normal(shape).astype(dtype)
    xt = torch.tensor(x, requires_grad=True)
    yt = tv(xt)
    yt.backward(torch.tensor(g))
    tol = dict(TOL[dtype])
    grad_tol = dict(rtol=1e-7, atol=1e-7) if gate == "hardsigmoid" and dtype == np.float64 else tol  # see above
    for name, xl in _layouts(x).items():
        assert K._layout(xl) == name
        with ex.no_grad():
            y = se(ex.tensor(xl))
        assert is_channels_last(y.numpy()) == (name == "channels_last"), "the output keeps the input's layout"
        assert_close(y.numpy(), yt.detach().numpy(), f"inference ({name})", **tol)
        for gname, gl in _layouts(g).items():
            se.zero_grad()
            xe = ex.tensor(xl, requires_grad=True)
            ye = se(xe)
            assert_close(ye.numpy(), yt.detach().numpy(), f"training forward ({name})", **tol)
            ye.backward(ex.tensor(gl))
            assert_close(xe.grad.numpy(), xt.grad.numpy(), f"grad of input ({name} x, {gname} grad)", **grad_tol)
            for (n, p), tp in zip(se.named_parameters(), tv.parameters()):
                assert_close(p.grad.numpy(), tp.grad.numpy(), f"grad of {n} ({name} x, {gname} grad)", **grad_tol)


def test_inference_kernel_equals_the_training_forward_with_and_without_biases():
    rng = np.random.default_rng(1)
    x = rng.standard_normal((4, 96, 14, 14)).astype(np.float32)
    w1, b1 = rng.standard_normal((24, 96, 1, 1)).astype(np.float32), rng.standard_normal(24).astype(np.float32)
    w2, b2 = rng.standard_normal((96, 24, 1, 1)).astype(np.float32), rng.standard_normal(96).astype(np.float32)
    for xl in _layouts(x).values():
        for biases in ((b1, b2), (None, None)):
            ref = K.se_forward(xl, w1, biases[0], w2, biases[1], "relu", "hardsigmoid")[0]
            out = K.se_inference(xl, w1, biases[0], w2, biases[1], "relu", "hardsigmoid")
            assert_close(out, ref, "inference kernel vs training forward", **TOL[np.float32])
