"""Layers against torch/torchvision: outputs, gradients, buffers, state_dict keys, repr, errors, init."""
import functools
import math

import numpy as np
import pytest

import excite as ex
from excite import nn
from excite.errors import InvalidArgumentError, ShapeError
from oracle import assert_close


def _load_from_torch(e_mod, t_mod):
    e_mod.load_state_dict({k: v.detach().numpy().copy() for k, v in t_mod.state_dict().items()})


def layer_parity(torch, e_mod, t_mod, x, steps=1, tol=None):
    """Same weights, same input: outputs, input grads, parameter grads and buffers agree (for ``steps`` calls)."""
    tol = tol or {}
    _load_from_torch(e_mod, t_mod)
    assert list(e_mod.state_dict()) == list(t_mod.state_dict())
    rng = np.random.default_rng(7)
    for step in range(steps):
        xs = x if step == 0 else (x * (1 + step) + step).astype(x.dtype)
        xe = ex.tensor(xs, requires_grad=True)
        xt = torch.tensor(xs, requires_grad=True)
        ye, yt = e_mod(xe), t_mod(xt)
        assert_close(ye.numpy(), yt.detach().numpy(), f"output (step {step})", **tol)
        g = rng.standard_normal(yt.shape).astype(x.dtype)
        ye.backward(ex.tensor(g))
        yt.backward(torch.tensor(g))
        assert_close(xe.grad.numpy(), xt.grad.numpy(), f"input grad (step {step})", **tol)
    for (n, p), (_, tp) in zip(e_mod.named_parameters(), t_mod.named_parameters()):
        assert_close(p.grad.numpy(), tp.grad.numpy(), f"grad of {n}", **tol)
    for (n, b), (_, tb) in zip(e_mod.named_buffers(), t_mod.named_buffers()):
        assert_close(b.numpy(), tb.numpy(), f"buffer {n}", **tol)
        assert b.dtype == tb.numpy().dtype, n
    return e_mod


def _randn(*shape, scale=1.0, seed=0):
    return (np.random.default_rng(seed).standard_normal(shape) * scale).astype(np.float32)


def _both(torch, name, *args, **kwargs):
    return getattr(nn, name)(*args, **kwargs), getattr(torch.nn, name)(*args, **kwargs)


# ----- Conv2d -------------------------------------------------------------------------------------------
CONV_VARIANTS = [
    dict(in_channels=3, out_channels=8, kernel_size=3),
    dict(in_channels=4, out_channels=8, kernel_size=3, stride=2, padding=1),
    dict(in_channels=4, out_channels=4, kernel_size=3, padding=1, groups=4, bias=False),
    dict(in_channels=4, out_channels=6, kernel_size=(3, 5), stride=(2, 1), padding=(1, 2), dilation=(2, 1)),
    dict(in_channels=4, out_channels=6, kernel_size=5, padding="same"),
    dict(in_channels=4, out_channels=6, kernel_size=(4, 2), padding="same"),  # asymmetric: torch pads bottom/right
    dict(in_channels=4, out_channels=6, kernel_size=3, padding="same", dilation=2, groups=2),
    dict(in_channels=4, out_channels=2, kernel_size=2, padding="valid"),
    dict(in_channels=6, out_channels=6, kernel_size=1, groups=3, padding_mode="zeros"),
]


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel lengths")
@pytest.mark.parametrize("kwargs", CONV_VARIANTS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()))
def test_conv2d_matches_torch(torch, kwargs):
    e_mod, t_mod = _both(torch, "Conv2d", **kwargs)
    assert repr(e_mod) == repr(t_mod)
    assert [n for n, _ in e_mod.named_parameters()] == [n for n, _ in t_mod.named_parameters()]
    layer_parity(torch, e_mod, t_mod, _randn(2, kwargs["in_channels"], 9, 8))


@pytest.mark.parametrize("kwargs", [
    dict(padding="full"), dict(padding="same", stride=2), dict(groups=3), dict(groups=0),
    dict(out_channels=5, groups=2),
])
def test_conv2d_invalid_arguments_raise_like_torch(torch, kwargs):
    args = dict(in_channels=4, out_channels=4, kernel_size=3)
    args.update(kwargs)
    with pytest.raises(ValueError):
        torch.nn.Conv2d(**args)
    with pytest.raises(InvalidArgumentError):
        nn.Conv2d(**args)


@pytest.mark.parametrize("mode", ["reflect", "replicate", "circular", "bogus"])
def test_conv2d_padding_modes_other_than_zeros_are_refused(mode):
    with pytest.raises(InvalidArgumentError, match=f"padding_mode='{mode}'"):
        nn.Conv2d(2, 2, 3, padding=1, padding_mode=mode)


def test_factory_kwargs_dtype_and_device():
    conv = nn.Conv2d(2, 3, 3, dtype=ex.float64, device="cpu")
    assert conv.weight.dtype == np.float64 and conv.bias.dtype == np.float64
    bn = nn.BatchNorm2d(3, dtype=ex.float64)
    assert bn.running_mean.dtype == np.float64 and bn.num_batches_tracked.dtype == np.int64
    assert nn.Linear(2, 2, dtype=ex.float64).weight.dtype == np.float64
    with pytest.raises(InvalidArgumentError, match="cuda"):
        nn.Linear(2, 2, device="cuda")


# ----- Linear ---------------------------------------------------------------------------------------------
@pytest.mark.parametrize("bias", [True, False])
@pytest.mark.parametrize("shape", [(5, 7), (2, 3, 7)])
def test_linear_matches_torch(torch, bias, shape):
    e_mod, t_mod = _both(torch, "Linear", 7, 4, bias=bias)
    assert repr(e_mod) == repr(t_mod)
    layer_parity(torch, e_mod, t_mod, _randn(*shape))


# ----- BatchNorm -------------------------------------------------------------------------------------------
BN_VARIANTS = [
    dict(),
    dict(eps=1e-3, momentum=0.01),
    dict(momentum=None),
    dict(affine=False),
    dict(track_running_stats=False),
    dict(bias=False),
]


@pytest.mark.parametrize("kwargs", BN_VARIANTS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()) or "default")
def test_batchnorm2d_training_steps_match_torch(torch, kwargs):
    e_mod, t_mod = _both(torch, "BatchNorm2d", 5, **kwargs)
    assert repr(e_mod) == repr(t_mod)
    if e_mod.weight is not None:  # non-trivial affine parameters
        with torch.no_grad():
            t_mod.weight.uniform_(0.5, 1.5)
            if t_mod.bias is not None:
                t_mod.bias.uniform_(-0.5, 0.5)
    layer_parity(torch, e_mod, t_mod, _randn(4, 5, 3, 3, scale=2.0), steps=3)
    if e_mod.track_running_stats:
        assert int(e_mod.num_batches_tracked.item()) == 3 == int(t_mod.num_batches_tracked)


@pytest.mark.parametrize("kwargs", BN_VARIANTS, ids=lambda k: ",".join(f"{a}={b}" for a, b in k.items()) or "default")
def test_batchnorm2d_eval_matches_torch(torch, kwargs):
    e_mod, t_mod = _both(torch, "BatchNorm2d", 5, **kwargs)
    if t_mod.running_mean is not None:
        t_mod.running_mean.uniform_(-1, 1)
        t_mod.running_var.uniform_(0.5, 2)
    e_mod.eval()
    t_mod.eval()
    layer_parity(torch, e_mod, t_mod, _randn(2, 5, 4, 4))
    if e_mod.track_running_stats:
        assert int(e_mod.num_batches_tracked.item()) == 0


@pytest.mark.parametrize("shape", [(6, 3), (4, 3, 5)])
def test_batchnorm1d_matches_torch(torch, shape):
    e_mod, t_mod = _both(torch, "BatchNorm1d", 3)
    assert repr(e_mod) == repr(t_mod)
    layer_parity(torch, e_mod, t_mod, _randn(*shape), steps=2)


def test_batchnorm_rejects_wrong_rank():
    with pytest.raises(ShapeError, match=r"4D input.*\[2, 3, 4\]"):
        nn.BatchNorm2d(3)(ex.zeros(2, 3, 4))
    with pytest.raises(ShapeError, match="2D or 3D"):
        nn.BatchNorm1d(3)(ex.zeros(2, 3, 4, 4))


def test_batchnorm_reset_running_stats():
    bn = nn.BatchNorm2d(2)
    bn(ex.randn(3, 2, 2, 2) * 3 + 1)
    bn.reset_running_stats()
    assert bn.running_mean.numpy().tolist() == [0, 0] and bn.running_var.numpy().tolist() == [1, 1]
    assert bn.num_batches_tracked.item() == 0


# ----- activations ------------------------------------------------------------------------------------------
ACTIVATIONS = ["ReLU", "ReLU6", "Sigmoid", "Tanh", "Hardsigmoid", "Hardswish", "SiLU"]
INPLACE = {"ReLU", "ReLU6", "Hardsigmoid", "Hardswish", "SiLU"}


@pytest.mark.parametrize("name", ACTIVATIONS)
def test_activation_matches_torch_and_never_writes_its_input(torch, name):
    for kwargs in ([{}, {"inplace": False}, {"inplace": True}] if name in INPLACE else [{}]):
        e_mod, t_mod = _both(torch, name, **kwargs)
        assert repr(e_mod) == repr(t_mod), kwargs
        x = _randn(3, 4, 5, scale=4.0)
        xe = ex.tensor(x.copy(), requires_grad=True)
        ye = e_mod(xe)
        np.testing.assert_array_equal(xe.numpy(), x)  # inplace=True must not overwrite the input
        layer_parity(torch, nn.Sequential(e_mod), torch.nn.Sequential(getattr(torch.nn, name)()), x)
        assert ye.shape == x.shape


def test_softmax_module_matches_torch(torch):
    e_mod, t_mod = _both(torch, "Softmax", dim=1)
    assert repr(e_mod) == repr(t_mod)
    layer_parity(torch, e_mod, t_mod, _randn(3, 5))


# ----- pooling, flatten, identity ----------------------------------------------------------------------------
@pytest.mark.parametrize("name, args, kwargs", [
    ("AdaptiveAvgPool2d", (1,), {}),
    ("AdaptiveAvgPool2d", ((2, 3),), {}),
    ("AdaptiveAvgPool2d", ((None, 2),), {}),
    ("AvgPool2d", (3,), dict(stride=2, padding=1)),
    ("AvgPool2d", (2,), dict(ceil_mode=True, count_include_pad=False)),
    ("MaxPool2d", (3, 2, 1), {}),
    ("MaxPool2d", (2,), dict(dilation=2, ceil_mode=True)),
    ("Flatten", (), {}),
    ("Flatten", (0, 2), {}),
    ("Identity", (54, "ignored"), dict(unused=1)),
])
def test_shape_layers_match_torch(torch, name, args, kwargs):
    e_mod, t_mod = _both(torch, name, *args, **kwargs)
    assert repr(e_mod) == repr(t_mod)
    layer_parity(torch, e_mod, t_mod, _randn(2, 3, 7, 9))


# ----- dropout -------------------------------------------------------------------------------------------------
def test_dropout_repr_eval_and_train_statistics(torch):
    for kwargs in ({}, {"p": 0.2}, {"p": 0.3, "inplace": True}):
        assert repr(nn.Dropout(**kwargs)) == repr(torch.nn.Dropout(**kwargs))
    drop = nn.Dropout(0.25)
    x = ex.ones(200, 500)
    y = drop(x).numpy()
    kept = y != 0
    assert abs(kept.mean() - 0.75) < 0.01
    np.testing.assert_allclose(y[kept], 1 / 0.75, rtol=1e-6)
    assert np.all(x.numpy() == 1)
    drop.eval()
    np.testing.assert_array_equal(drop(x).numpy(), x.numpy())
    np.testing.assert_array_equal(nn.Dropout(0.0)(x).numpy(), x.numpy())
    assert not nn.Dropout(1.0)(x).numpy().any()
    xg = ex.ones(4, 6, requires_grad=True)
    out = nn.Dropout(0.5)(xg)
    out.sum().backward()
    np.testing.assert_array_equal(xg.grad.numpy(), out.numpy())  # grad is the same mask, scaled


@pytest.mark.parametrize("p", [-0.1, 1.5])
def test_dropout_invalid_probability_message_matches_torch(torch, p):
    with pytest.raises(ValueError) as te:
        torch.nn.Dropout(p)
    with pytest.raises(InvalidArgumentError) as ee:
        nn.Dropout(p)
    assert str(ee.value) == str(te.value)


# ----- losses ----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("kwargs", [{}, {"reduction": "sum"}, {"label_smoothing": 0.1}, {"ignore_index": 1}])
def test_cross_entropy_loss_matches_torch(torch, kwargs):
    logits = _randn(6, 4)
    target = np.array([0, 1, 3, 2, 1, 0])
    e_mod, t_mod = _both(torch, "CrossEntropyLoss", **kwargs)
    assert repr(e_mod) == repr(t_mod) and list(e_mod.state_dict()) == []
    xe, xt = ex.tensor(logits, requires_grad=True), torch.tensor(logits, requires_grad=True)
    le, lt = e_mod(xe, ex.tensor(target)), t_mod(xt, torch.tensor(target))
    assert_close(le.numpy(), lt.detach().numpy(), "loss")
    le.backward()
    lt.backward()
    assert_close(xe.grad.numpy(), xt.grad.numpy(), "grad")


def test_cross_entropy_loss_class_weights_are_a_buffer(torch):
    w = np.array([1.0, 2.0, 0.5], np.float32)
    e_mod = nn.CrossEntropyLoss(weight=ex.tensor(w))
    t_mod = torch.nn.CrossEntropyLoss(weight=torch.tensor(w))
    assert list(e_mod.state_dict()) == list(t_mod.state_dict()) == ["weight"]
    logits, target = _randn(5, 3), np.array([0, 1, 2, 1, 0])
    assert_close(e_mod(ex.tensor(logits), ex.tensor(target)).numpy(),
                 t_mod(torch.tensor(logits), torch.tensor(target)).numpy(), "loss")
    with pytest.warns(UserWarning):  # torch warns about the legacy arguments; only the resolved reduction matters
        legacy = torch.nn.CrossEntropyLoss(size_average=False).reduction
    assert nn.CrossEntropyLoss(size_average=False).reduction == legacy


# ----- init --------------------------------------------------------------------------------------------------------
def _uniform_bound_checks(values, bound):
    values = values.reshape(-1)
    assert np.abs(values).max() <= bound
    assert np.abs(values).max() > 0.99 * bound
    assert abs(values.std() / (bound / math.sqrt(3)) - 1) < 0.02
    assert abs(values.mean()) < 0.02 * bound


def test_conv_and_linear_default_init_follow_torchs_distribution(torch):
    # kaiming_uniform_(a=sqrt(5)) gives U(-1/sqrt(fan_in), 1/sqrt(fan_in)); the bias uses the same bound
    for e_mod, t_mod, fan_in in (
        (nn.Conv2d(64, 256, 3), torch.nn.Conv2d(64, 256, 3), 64 * 9),
        (nn.Conv2d(64, 128, 3, groups=4), torch.nn.Conv2d(64, 128, 3, groups=4), 16 * 9),
        (nn.Linear(300, 400), torch.nn.Linear(300, 400), 300),
    ):
        bound = 1 / math.sqrt(fan_in)
        _uniform_bound_checks(e_mod.weight.numpy(), bound)
        _uniform_bound_checks(t_mod.weight.detach().numpy(), bound)  # the oracle follows the same formula
        b = e_mod.bias.numpy()
        assert np.abs(b).max() <= bound and np.abs(b).max() > 0.9 * bound
    bn = nn.BatchNorm2d(4)
    assert bn.weight.numpy().tolist() == [1] * 4 and bn.bias.numpy().tolist() == [0] * 4
    assert bn.running_var.numpy().tolist() == [1] * 4 and bn.num_batches_tracked.item() == 0


def test_init_is_reproducible_from_manual_seed():
    ex.manual_seed(3)
    a = nn.Conv2d(3, 4, 3).weight.numpy().copy()
    ex.manual_seed(3)
    np.testing.assert_array_equal(nn.Conv2d(3, 4, 3).weight.numpy(), a)
    gen = np.random.default_rng(9)
    w1 = nn.init.normal_(ex.empty(5, 5), generator=gen).numpy().copy()
    w2 = nn.init.normal_(ex.empty(5, 5), generator=np.random.default_rng(9)).numpy()
    np.testing.assert_array_equal(w1, w2)


@pytest.mark.parametrize("name, kwargs, expected_std", [
    ("kaiming_normal_", dict(mode="fan_out", nonlinearity="relu"), math.sqrt(2 / (128 * 9))),
    ("kaiming_normal_", dict(), math.sqrt(2 / (1 + 0.01 ** 2)) / math.sqrt(64 * 9)),
    ("kaiming_uniform_", dict(a=math.sqrt(5)), 1 / math.sqrt(64 * 9) / math.sqrt(3)),
    ("xavier_uniform_", dict(gain=2.0), 2.0 * math.sqrt(2 / (64 * 9 + 128 * 9))),
    ("xavier_normal_", dict(), math.sqrt(2 / (64 * 9 + 128 * 9))),
    ("normal_", dict(std=0.01), 0.01),
    ("trunc_normal_", dict(std=0.02), 0.02),
])
def test_init_functions_match_torch_statistics(torch, name, kwargs, expected_std):
    e = getattr(nn.init, name)(ex.empty(128, 64, 3, 3), **kwargs).numpy()
    t = getattr(torch.nn.init, name)(torch.empty(128, 64, 3, 3), **kwargs).numpy()
    assert abs(e.std() / t.std() - 1) < 0.02
    assert abs(e.std() / expected_std - 1) < 0.02
    assert abs(e.mean()) < 0.02 * expected_std * 10


def test_simple_inits_and_gains_match_torch(torch):
    for fn, args in (("zeros_", ()), ("ones_", ()), ("constant_", (0.3,)), ("eye_", ())):
        e = getattr(nn.init, fn)(ex.empty(3, 4), *args).numpy()
        t = getattr(torch.nn.init, fn)(torch.empty(3, 4), *args).numpy()
        np.testing.assert_array_equal(e, t)
    u = nn.init.uniform_(ex.empty(1000), -0.1, 0.2).numpy()
    assert u.min() >= -0.1 and u.max() <= 0.2 and u.max() - u.min() > 0.29
    tn = nn.init.trunc_normal_(ex.empty(10000), std=1.0, a=-0.5, b=0.5).numpy()
    assert tn.min() >= -0.5 and tn.max() <= 0.5
    for args in (("linear",), ("conv2d",), ("sigmoid",), ("tanh",), ("relu",), ("leaky_relu",),
                 ("leaky_relu", 0.2), ("selu",)):
        assert nn.init.calculate_gain(*args) == torch.nn.init.calculate_gain(*args)
    for tensor_shape in ((4, 3), (8, 2, 3, 3), (6, 5, 2)):
        assert nn.init._calculate_fan_in_and_fan_out(ex.empty(*tensor_shape)) == \
            torch.nn.init._calculate_fan_in_and_fan_out(torch.empty(*tensor_shape))
    with pytest.raises(InvalidArgumentError, match="fewer than 2 dimensions"):
        nn.init.kaiming_uniform_(ex.empty(5))
    with pytest.raises(InvalidArgumentError, match="fan_avg"):
        nn.init.kaiming_normal_(ex.empty(3, 3), mode="fan_avg")
    with pytest.raises(InvalidArgumentError):
        nn.init.calculate_gain("gelu")


def test_init_bypasses_autograd_on_parameters():
    p = nn.Parameter(ex.zeros(3, 3))
    nn.init.ones_(p)
    assert p.is_leaf and p.requires_grad and p.numpy().sum() == 9


# ----- StochasticDepth ----------------------------------------------------------------------------------------------
def test_stochastic_depth_repr_and_identity_cases(torch, torchvision):
    for p, mode in ((0.2, "row"), (0.5, "batch"), (0, "row")):
        assert repr(nn.StochasticDepth(p, mode)) == repr(torchvision.ops.StochasticDepth(p, mode))
    x = ex.randn(4, 3, 2, 2)
    sd = nn.StochasticDepth(0.5, "row").eval()
    assert sd(x) is x
    assert nn.StochasticDepth(0.0, "batch")(x) is x
    assert not nn.StochasticDepth(1.0, "row")(x).numpy().any()
    assert list(nn.StochasticDepth(0.3, "row").state_dict()) == []


@pytest.mark.parametrize("mode", ["row", "batch"])
def test_stochastic_depth_drops_rows_or_batches_and_rescales(mode):
    p, trials = 0.3, 400
    x = ex.ones(8, 2, 3, 3)
    survived = []
    for _ in range(trials):
        y = nn.stochastic_depth(x, p, mode).numpy()
        rows = y.reshape(8, -1)
        for r in rows:
            assert np.all(r == 0) or np.allclose(r, 1 / (1 - p)), "a row is either dropped or scaled by 1/(1-p)"
        alive = rows[:, 0] != 0
        if mode == "batch":
            assert alive.all() or not alive.any()
        survived.append(alive.mean())
    draws = trials * (8 if mode == "row" else 1)
    assert abs(np.mean(survived) - (1 - p)) < 5 * math.sqrt(p * (1 - p) / draws)
    xg = ex.ones(8, 2, requires_grad=True)
    y = nn.stochastic_depth(xg, p, mode)
    y.sum().backward()
    np.testing.assert_array_equal(xg.grad.numpy(), y.numpy())


@pytest.mark.parametrize("p, mode", [(1.5, "row"), (-0.1, "batch"), (0.5, "column")])
def test_stochastic_depth_errors_match_torchvision(torch, torchvision, p, mode):
    x = np.ones((2, 3), np.float32)
    with pytest.raises(ValueError) as te:
        torchvision.ops.StochasticDepth(p, mode)(torch.tensor(x))
    with pytest.raises(InvalidArgumentError) as ee:
        nn.StochasticDepth(p, mode)(ex.tensor(x))
    assert str(ee.value) == str(te.value)


# ----- Conv2dNormActivation ------------------------------------------------------------------------------------------
def _cna_variants(lib):
    tnn = lib.nn
    return [
        dict(in_channels=3, out_channels=8),
        dict(in_channels=3, out_channels=8, kernel_size=3, stride=2, activation_layer=tnn.Hardswish),
        dict(in_channels=8, out_channels=8, kernel_size=5, stride=2, groups=8,
             norm_layer=functools.partial(tnn.BatchNorm2d, eps=1e-3, momentum=0.01), activation_layer=tnn.SiLU),
        dict(in_channels=8, out_channels=4, kernel_size=1, activation_layer=None),
        dict(in_channels=4, out_channels=6, kernel_size=3, norm_layer=None),
        dict(in_channels=4, out_channels=6, kernel_size=3, dilation=2, bias=True, inplace=None),
        dict(in_channels=4, out_channels=6, kernel_size=(3, 5), stride=(1, 2), activation_layer=tnn.ReLU6,
             inplace=False),
        dict(in_channels=4, out_channels=6, kernel_size=3, padding=0, activation_layer=tnn.Hardsigmoid),
        dict(in_channels=4, out_channels=6, kernel_size=3, dilation=(1, 2)),
    ]


@pytest.mark.parametrize("index", range(9))
@pytest.mark.parametrize("training", [True, False])
def test_conv2d_norm_activation_matches_torchvision(torch, torchvision, index, training):
    kwargs_e, kwargs_t = _cna_variants(ex)[index], _cna_variants(torch)[index]
    e_mod = nn.Conv2dNormActivation(**kwargs_e)
    t_mod = torchvision.ops.Conv2dNormActivation(**kwargs_t)
    assert isinstance(e_mod, nn.Sequential)
    assert repr(e_mod) == repr(t_mod)
    assert list(e_mod.state_dict()) == list(t_mod.state_dict())
    assert e_mod.out_channels == t_mod.out_channels
    e_mod.train(training)
    t_mod.train(training)
    layer_parity(torch, e_mod, t_mod, _randn(2, kwargs_e["in_channels"], 9, 10), steps=2 if training else 1)


def test_conv2d_norm_activation_indexing_is_sequential():
    block = nn.Conv2dNormActivation(3, 8)
    assert isinstance(block[0], nn.Conv2d) and isinstance(block[1], nn.BatchNorm2d) and isinstance(block[2], nn.ReLU)
    assert block[2].inplace and len(block) == 3
    assert isinstance(block[:2], nn.Sequential) and len(block[:2]) == 2
