"""The eight RegNet-Y networks against torchvision: stages, layout, repr, init, eval logits, one training step."""
import numpy as np
import pytest

import excite as ex
import excite.nn.functional as F
import excite.vision.models as exm
from test_models import (TOLERANCE, build_pair, initialisation_mismatches, randomise_batch_norm,
                         randomise_batch_norm_for_training, relative_error, torch_train_step)

# (resolution, batch) of the eval comparison: the usual 224 for the small models, reduced sizes for the big ones.
# The BatchNorm calibration (test_models.randomise_batch_norm) sees 2x the batch; with few values per channel in
# the last stage (1x1 at 32 px) the statistics are ill-conditioned and float32 itself (torch's too, against
# float64) drifts to 1e-3, so the widest models run at 128 px (4x4 last stage): float32 errors are 4e-5 to 1e-4 there
EVAL_INPUT = {
    "regnet_y_400mf": (224, 2), "regnet_y_800mf": (224, 2), "regnet_y_1_6gf": (224, 2),
    "regnet_y_3_2gf": (128, 2), "regnet_y_8gf": (96, 2), "regnet_y_16gf": (64, 2),
    "regnet_y_32gf": (128, 1), "regnet_y_128gf": (128, 1),
}
MODEL_NAMES = list(EVAL_INPUT)
# torchvision's 645M-parameter model is built without its init, holding excite's weights (the same init code is
# compared on the other seven)
UNINITIALISED_ORACLE = {"regnet_y_128gf"}
TRAIN_MODELS = ["regnet_y_400mf", "regnet_y_800mf"]
TRAIN_RESOLUTION = 64
TARGETS = np.array([3, 7])


@pytest.fixture(scope="module", autouse=True)
def torch_on_one_thread(torch):
    """As in test_models: a single-threaded oracle is far steadier on the shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module", params=MODEL_NAMES)
def model_pair(request, torch, torchvision):
    """(name, torchvision model, excite model, init problems), built once per model with seed 0.

    Building the two big ones (145M and 645M parameters) is most of this file's time and memory, so each
    pair lives only while its model's tests run.
    """
    name = request.param
    if name in UNINITIALISED_ORACLE:
        ex.manual_seed(0)
        ex_model = exm.get_model(name)
        from unittest import mock

        skip = lambda tensor, *args, **kwargs: tensor  # noqa: E731
        with mock.patch.multiple(torch.nn.init, normal_=skip, kaiming_uniform_=skip, uniform_=skip):
            tv_model = torchvision.models.get_model(name)  # torchvision's layout without its 20 s of random draws
        tv_model.load_state_dict({k: torch.from_numpy(v.numpy()) for k, v in ex_model.state_dict().items()})
        problems = None
    else:
        tv_model, ex_model = build_pair(torch, torchvision, name)
        problems = initialisation_mismatches(name, tv_model, ex_model)
    yield name, tv_model, ex_model, problems
    del tv_model, ex_model


def test_block_params_match_torchvision(torchvision):
    """The quantised stage widths, depths and group widths from the paper's (depth, w_0, w_a, w_m, group width)."""
    from torchvision.models import regnet as tv_regnet

    from excite.vision.models import regnet

    for name, params in regnet._REGNET_Y.items():
        theirs = tv_regnet.BlockParams.from_init_params(**params, se_ratio=0.25)
        ours = exm.BlockParams.from_init_params(**params, se_ratio=0.25)
        assert vars(ours) == vars(theirs), name
    for params in [dict(depth=13, w_0=24, w_a=36.44, w_m=2.49, group_width=8),  # RegNetX-200MF, no SE
                   dict(depth=10, w_0=16, w_a=12.5, w_m=2.7, group_width=40, bottleneck_multiplier=0.5)]:
        theirs = tv_regnet.BlockParams.from_init_params(**params)
        assert vars(exm.BlockParams.from_init_params(**params)) == vars(theirs), params


def test_block_params_reject_invalid_settings():
    with pytest.raises(ex.InvalidArgumentError, match="w_0=50"):
        exm.BlockParams.from_init_params(depth=10, w_0=50, w_a=20.0, w_m=2.0, group_width=8)
    with pytest.raises(ex.InvalidArgumentError, match="w_m=1.0"):
        exm.BlockParams.from_init_params(depth=10, w_0=48, w_a=20.0, w_m=1.0, group_width=8)


def test_parameter_count_is_torchvisions_metadata(model_pair, torchvision):
    name, tv_model, ex_model, _ = model_pair
    expected = torchvision.models.get_model_weights(name).DEFAULT.meta["num_params"]
    assert sum(p.numel() for p in tv_model.parameters()) == expected
    assert sum(p.numel() for p in ex_model.parameters()) == expected


def test_state_dict_keys_order_and_shapes(model_pair):
    name, tv_model, ex_model, _ = model_pair
    tv_layout = [(k, tuple(v.shape)) for k, v in tv_model.state_dict().items()]
    ex_layout = [(k, tuple(v.shape)) for k, v in ex_model.state_dict().items()]
    first_difference = next((i for i, (a, b) in enumerate(zip(ex_layout, tv_layout)) if a != b), None)
    assert first_difference is None, (
        f"{name}: entry {first_difference} is {ex_layout[first_difference]}, "
        f"torchvision has {tv_layout[first_difference]}")
    assert len(ex_layout) == len(tv_layout)
    assert [k for k, _ in ex_model.named_parameters()] == [k for k, _ in tv_model.named_parameters()]


def test_repr(model_pair):
    name, tv_model, ex_model, _ = model_pair
    assert repr(ex_model) == repr(tv_model), name


def test_batch_norm_settings_and_groups(model_pair, torch):
    name, tv_model, ex_model, _ = model_pair
    tv_modules = dict(tv_model.named_modules())
    for key, m in ex_model.named_modules():
        theirs = tv_modules[key]
        if isinstance(m, ex.nn.BatchNorm2d):
            assert (m.eps, m.momentum) == (theirs.eps, theirs.momentum), key
        elif isinstance(m, ex.nn.Conv2d):
            assert (m.groups, m.stride, m.padding) == (theirs.groups, theirs.stride, theirs.padding), key


# (torchvision's largest model is built without its init, so there is no init to compare with)
@pytest.mark.parametrize("model_pair", [n for n in MODEL_NAMES if n not in UNINITIALISED_ORACLE], indirect=True)
def test_initialisation_follows_torchvision(model_pair):
    name, _, _, problems = model_pair
    assert problems is not None and not problems, f"{name}: " + "; ".join(problems[:10])


def test_eval_logits_match_torchvision(model_pair, torch):
    name, tv_model, ex_model, _ = model_pair
    resolution, batch = EVAL_INPUT[name]
    x = np.random.default_rng(1).standard_normal((batch, 3, resolution, resolution)).astype(np.float32)
    randomise_batch_norm(torch, tv_model, x)
    # numpy() shares torch's memory; load_state_dict copies it once (the 128GF state is 2.6 GB)
    ex_model.load_state_dict({k: v.detach().numpy() for k, v in tv_model.state_dict().items()})
    tv_model.eval()
    ex_model.eval()
    with torch.no_grad():
        expected = tv_model(torch.from_numpy(x)).numpy()
    with ex.no_grad():
        actual = ex_model(ex.tensor(x)).numpy()
    assert actual.shape == (batch, 1000)
    # float64 torchvision is the exact answer; torch's float32 logits are another approximation of it (on the
    # widest models at 1e-4 themselves)
    with torch.no_grad():
        exact = tv_model.double()(torch.from_numpy(x).double()).numpy()
    tv_model.float()
    err = relative_error(actual, exact)
    assert err <= TOLERANCE, f"{name} at {resolution}px: logits differ by {err:.2e} of the largest logit"
    assert relative_error(actual, expected) <= 2 * TOLERANCE


def _excite_train_step(model, x):
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(ex.tensor(x)), ex.tensor(TARGETS))
    loss.backward()
    return loss.item(), {k: p.grad.numpy() for k, p in model.named_parameters()}


@pytest.mark.parametrize("name", TRAIN_MODELS)
def test_train_step_matches_torchvision(torch, torchvision, name):
    """One training step at batch 2: in float64, loss, every gradient and every BatchNorm buffer equal torch's
    to 1e-8; in float32, the loss to 1e-4 and the gradients within what float32 rounding can do to them.

    These ReLU networks with BatchNorm over 8 values per channel (the 2x2 last stage) sit on knife edges:
    the exact (float64) gradients move by 2-20% when the input moves by 1e-6, so float32 rounding alone
    (torch's, or excite's with another summation order of equal accuracy) lands them on either side. Float64
    is where the layers are compared exactly; the float32 allowance adds 10x that 1e-6 nudge's effect.
    """
    import copy

    tv_model, ex_model = build_pair(torch, torchvision, name)
    randomise_batch_norm_for_training(torch, tv_model)
    start = {k: v.detach().numpy().copy() for k, v in tv_model.state_dict().items()}
    tv_exact = copy.deepcopy(tv_model).double().train()
    tv_model.train()
    x = np.random.default_rng(3).standard_normal((2, 3, TRAIN_RESOLUTION, TRAIN_RESOLUTION)).astype(np.float32)
    exact_loss, exact_grads = torch_train_step(torch, tv_exact, torch.from_numpy(x).double())
    exact_buffers = {k: b.numpy().copy() for k, b in tv_exact.named_buffers()}
    nudged = x.astype(np.float64) * (1 + 1e-6 * np.random.default_rng(9).standard_normal(x.shape))
    _, nudged_grads = torch_train_step(torch, tv_exact, torch.from_numpy(nudged))
    tv_loss, tv_grads = torch_train_step(torch, tv_model, torch.from_numpy(x))

    # float64: exact
    ex_model.double().load_state_dict({k: v.astype(np.float64) if v.dtype.kind == "f" else v
                                       for k, v in start.items()})
    ex_model.train()
    loss64, grads64 = _excite_train_step(ex_model, x.astype(np.float64))
    assert relative_error(loss64, exact_loss) <= 1e-10
    bad = [f"{k} ({relative_error(g, exact_grads[k]):.1e})" for k, g in grads64.items()
           if relative_error(g, exact_grads[k]) > 1e-8]
    assert not bad, f"{name}: float64 gradients differ from torch's: {', '.join(bad[:10])}"
    bad = [k for k, b in ex_model.named_buffers() if relative_error(b.numpy(), exact_buffers[k]) > 1e-8]
    assert not bad, f"{name}: BatchNorm buffers differ after one training step: {bad[:10]}"

    # float32: what the networks train in
    ex_model.float().load_state_dict(start)
    loss32, grads32 = _excite_train_step(ex_model, x)
    assert relative_error(loss32, exact_loss) <= TOLERANCE
    assert relative_error(loss32, tv_loss) <= TOLERANCE
    bad = []
    for key, grad in grads32.items():
        exact = exact_grads[key]
        err = float(np.max(np.abs(grad.astype(np.float64) - exact)))
        torch_rounding = float(np.max(np.abs(tv_grads[key].astype(np.float64) - exact)))
        conditioning = float(np.max(np.abs(nudged_grads[key] - exact)))
        allowed = TOLERANCE * float(np.max(np.abs(exact))) + 10 * torch_rounding + 10 * conditioning
        if err > allowed:
            bad.append(f"{key} (error {err:.2e}, allowed {allowed:.2e})")
    assert not bad, f"{name}: float32 gradients differ from torchvision's: {', '.join(bad[:10])}"


def test_builder_keyword_arguments_match_torchvision(torch, torchvision):
    kwargs = dict(num_classes=10, stem_width=16)
    tv_model, ex_model = build_pair(torch, torchvision, "regnet_y_400mf", **kwargs)
    assert repr(ex_model) == repr(tv_model)
    x = np.random.default_rng(2).standard_normal((2, 3, 64, 64)).astype(np.float32)
    randomise_batch_norm(torch, tv_model, x)
    ex_model.load_state_dict({k: v.detach().numpy().copy() for k, v in tv_model.state_dict().items()})
    with torch.no_grad():
        expected = tv_model.eval()(torch.from_numpy(x)).numpy()
    with ex.no_grad():
        actual = ex_model.eval()(ex.tensor(x)).numpy()
    assert actual.shape == (2, 10)
    assert relative_error(actual, expected) <= TOLERANCE


def test_builder_rejects_block_params_keywords_like_torchvision(torchvision):
    """torchvision hands the keywords to both BlockParams and RegNet, so RegNet refuses bottleneck_multiplier."""
    with pytest.raises(TypeError, match="bottleneck_multiplier") as theirs:
        torchvision.models.regnet_y_400mf(bottleneck_multiplier=0.5)
    with pytest.raises(TypeError, match="bottleneck_multiplier") as ours:
        exm.regnet_y_400mf(bottleneck_multiplier=0.5)
    assert str(ours.value) == str(theirs.value)
