"""The 13 SE networks against torchvision: layout, repr, init, eval logits, and one training step (loss, grads, BN)."""
import copy
from functools import partial

import numpy as np
import pytest

import excite as ex
import excite.nn.functional as F
import excite.vision.models as exm

# eval parity runs at each model's usual resolution except the biggest, which would take minutes in NumPy
EVAL_RESOLUTION = {
    "mobilenet_v3_small": 224, "mobilenet_v3_large": 224,
    "efficientnet_b0": 224, "efficientnet_b1": 240, "efficientnet_b2": 288, "efficientnet_b3": 300,
    "efficientnet_b4": 380, "efficientnet_b5": 128, "efficientnet_b6": 96, "efficientnet_b7": 64,
    "efficientnet_v2_s": 384, "efficientnet_v2_m": 128, "efficientnet_v2_l": 96,
}
MODEL_NAMES = sorted(EVAL_RESOLUTION)
TRAIN_RESOLUTION = 64  # the last feature map is 2x2: BatchNorm still sees several values per channel
TARGETS = np.array([3, 7])
TOLERANCE = 1e-4  # relative to the largest magnitude of the compared array (logits, a gradient, a buffer)


@pytest.fixture(scope="module", autouse=True)
def torch_on_one_thread(torch):
    """Run the oracle single-threaded here: on a busy 2-core machine (other processes, or excite's own kernel
    threads still spinning) two-thread torch steps of these models were measured 10-100x slower."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def build_pair(torch, torchvision, name, **kwargs):
    torch.manual_seed(0)
    tv_model = torchvision.models.get_model(name, **kwargs)
    ex.manual_seed(0)
    ex_model = exm.get_model(name, **kwargs)
    return tv_model, ex_model


def copy_weights(tv_model, ex_model):
    ex_model.load_state_dict({k: v.detach().numpy().copy() for k, v in tv_model.state_dict().items()})


def randomise_batch_norm(torch, tv_model, x, seed=0):
    """Give every BatchNorm random affine parameters and data-derived running statistics.

    The statistics are those of a calibration batch (``x`` plus as many fresh images) through the
    already-randomised network, so activations stay normalised through 200+ layers and float32 stays
    accurate; with purely random statistics, or ones from other images only, the deep models' logits
    explode (1e6) and float32 itself disagrees with float64. The statistics are far from the defaults
    (per-channel variances down to 1e-7, which makes a wrong eps visible) and from ``x``'s own batch
    statistics (using those instead changes the logits by 20-100%).
    """
    gen = torch.Generator().manual_seed(seed)
    calibration = torch.cat([torch.from_numpy(x), torch.randn(x.shape, generator=gen)])
    norms = [m for m in tv_model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    momenta = [m.momentum for m in norms]
    was_training = tv_model.training
    tv_model.eval()  # dropout and stochastic depth off during calibration; only BatchNorm collects statistics
    with torch.no_grad():
        for m in norms:
            c = m.num_features
            m.weight.copy_(torch.empty(c).uniform_(0.5, 1.5, generator=gen))
            m.bias.copy_(0.2 * torch.randn(c, generator=gen))
            m.reset_running_stats()
            m.momentum = None  # cumulative average: after one batch the running stats are that batch's
            m.train()
        tv_model(calibration)
    for m, momentum in zip(norms, momenta):
        m.momentum = momentum
    tv_model.train(was_training)


def relative_error(actual, expected):
    actual = np.asarray(actual, dtype=np.float64)
    expected = np.asarray(expected, dtype=np.float64)
    assert actual.shape == expected.shape, f"shape {actual.shape} != {expected.shape}"
    return float(np.max(np.abs(actual - expected)) / max(float(np.max(np.abs(expected))), 1e-30))


def initialisation_mismatches(name, tv_model, ex_model):
    """Where excite's fresh init departs from torchvision's distributions (the numbers differ: other generators)."""
    problems = []
    tv_state = tv_model.state_dict()
    for key, value in ex_model.state_dict().items():
        mine, theirs = np.asarray(value.numpy()).ravel(), tv_state[key].numpy().ravel()
        if np.all(theirs == theirs[0]):
            # constants (norm weight 1 / bias 0, conv and linear biases 0, fresh running stats) must match exactly
            if not np.array_equal(mine, theirs):
                problems.append(f"{key}: expected all {theirs[0]}")
            continue
        # random: kaiming_normal(fan_out), normal(0, 0.01) or uniform(+-1/sqrt(out)); a sample shows the spread
        mine, theirs = mine[:65536].astype(np.float64), theirs[:65536].astype(np.float64)
        if theirs.size >= 256 and abs(mine.std() / theirs.std() - 1) > 0.25:
            problems.append(f"{key}: std {mine.std():.4g}, torchvision {theirs.std():.4g}")
        elif abs(mine.mean()) > 5 * theirs.std() / np.sqrt(theirs.size):
            problems.append(f"{key}: mean {mine.mean():.3g} is not ~0")
    return problems


@pytest.fixture(scope="module", params=MODEL_NAMES)
def model_pair(request, torch, torchvision):
    """(name, torchvision model, excite model, init problems): both built with default arguments and seed 0.

    Shared by the tests of one model to build each big network once (building is a good part of the
    suite's time). The tests change weights, BatchNorm state and gradients, so each one sets up what it
    compares itself, and anything about the fresh initialisation is measured here, up front.
    """
    name = request.param
    tv_model, ex_model = build_pair(torch, torchvision, name)
    yield name, tv_model, ex_model, initialisation_mismatches(name, tv_model, ex_model)
    del tv_model, ex_model


def test_parameter_count(model_pair):
    name, tv_model, ex_model, _ = model_pair
    tv_count = sum(p.numel() for p in tv_model.parameters())
    ex_count = sum(p.numel() for p in ex_model.parameters())
    assert ex_count == tv_count, f"{name}: {ex_count} parameters, torchvision has {tv_count}"


def test_state_dict_keys_order_and_shapes(model_pair):
    name, tv_model, ex_model, _ = model_pair
    tv_layout = [(k, tuple(v.shape)) for k, v in tv_model.state_dict().items()]
    ex_layout = [(k, tuple(v.shape)) for k, v in ex_model.state_dict().items()]
    assert len(ex_layout) == len(tv_layout), f"{name}: {len(ex_layout)} entries, torchvision has {len(tv_layout)}"
    first_difference = next((i for i, (a, b) in enumerate(zip(ex_layout, tv_layout)) if a != b), None)
    assert first_difference is None, (
        f"{name}: entry {first_difference} is {ex_layout[first_difference]}, "
        f"torchvision has {tv_layout[first_difference]}")
    # parameters (not buffers) in the same order too: optimizers and checkpoints of optimizer state rely on it
    assert [k for k, _ in ex_model.named_parameters()] == [k for k, _ in tv_model.named_parameters()]


def test_repr(model_pair):
    name, tv_model, ex_model, _ = model_pair
    tv_lines, ex_lines = repr(tv_model).splitlines(), repr(ex_model).splitlines()
    first_difference = next((i for i, (a, b) in enumerate(zip(ex_lines, tv_lines)) if a != b), None)
    assert first_difference is None, (
        f"{name}: repr line {first_difference}: excite {ex_lines[first_difference]!r}, "
        f"torchvision {tv_lines[first_difference]!r}")
    assert repr(ex_model) == repr(tv_model)


def test_initialisation_follows_torchvision(model_pair):
    name, _, _, problems = model_pair
    assert not problems, f"{name}: " + "; ".join(problems[:10])


def eval_logits(torch, tv_model, ex_model, x):
    """Randomise torchvision's BatchNorm, copy its weights into excite, return (excite, torchvision) eval logits."""
    randomise_batch_norm(torch, tv_model, x)
    copy_weights(tv_model, ex_model)
    tv_model.eval()
    ex_model.eval()
    with torch.no_grad():
        expected = tv_model(torch.from_numpy(x)).numpy()
    with ex.no_grad():
        actual = ex_model(ex.tensor(x)).numpy()
    return actual, expected


def test_eval_logits_match_torchvision(model_pair, torch):
    name, tv_model, ex_model, _ = model_pair
    resolution = EVAL_RESOLUTION[name]
    x = np.random.default_rng(1).standard_normal((2, 3, resolution, resolution)).astype(np.float32)
    actual, expected = eval_logits(torch, tv_model, ex_model, x)
    assert actual.shape == (2, 1000)
    err = relative_error(actual, expected)
    assert err <= TOLERANCE, f"{name} at {resolution}px: logits differ by {err:.2e} of the largest logit"

    # the check has teeth: torchvision itself with the other family's BatchNorm eps misses the tolerance
    norms = [m for m in tv_model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    eps = [m.eps for m in norms]
    for m in norms:
        m.eps = 1e-5 if m.eps == 1e-3 else 1e-3
    with torch.no_grad():
        wrong_eps = tv_model(torch.from_numpy(x)).numpy()
    for m, e in zip(norms, eps):
        m.eps = e
    assert relative_error(wrong_eps, expected) > 10 * TOLERANCE


@pytest.mark.parametrize("name, kwargs, resolution", [
    ("mobilenet_v3_large", dict(width_mult=0.75, reduced_tail=True, dilated=True, num_classes=10), 96),
    ("mobilenet_v3_small", dict(width_mult=0.5, dropout=0.5, num_classes=7), 64),
    ("efficientnet_b0", dict(num_classes=5, dropout=0.1, stochastic_depth_prob=0.5), 64),
    ("efficientnet_v2_s", dict(num_classes=3, stochastic_depth_prob=0.1), 64),
])
def test_builder_keyword_arguments_match_torchvision(torch, torchvision, name, kwargs, resolution):
    tv_model, ex_model = build_pair(torch, torchvision, name, **kwargs)
    assert repr(ex_model) == repr(tv_model)
    assert ([(k, tuple(v.shape)) for k, v in ex_model.state_dict().items()]
            == [(k, tuple(v.shape)) for k, v in tv_model.state_dict().items()])
    x = np.random.default_rng(2).standard_normal((2, 3, resolution, resolution)).astype(np.float32)
    actual, expected = eval_logits(torch, tv_model, ex_model, x)
    assert actual.shape == (2, kwargs["num_classes"])
    assert relative_error(actual, expected) <= TOLERANCE


def test_custom_norm_layer_is_used(torch, torchvision):
    torch.manual_seed(0)
    tv_model = torchvision.models.efficientnet_b0(norm_layer=partial(torch.nn.BatchNorm2d, eps=0.01, momentum=0.3))
    ex_model = exm.efficientnet_b0(norm_layer=partial(ex.nn.BatchNorm2d, eps=0.01, momentum=0.3))
    assert repr(ex_model) == repr(tv_model)


# ----- training mode ---------------------------------------------------------------------------------------
def randomise_batch_norm_for_training(torch, tv_model, seed=0):
    """Random affine parameters (so gradients are generic) and running stats (so a wrong momentum shows)."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in tv_model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                c = m.num_features
                m.weight.copy_(torch.empty(c).uniform_(0.5, 1.5, generator=gen))
                m.bias.copy_(0.2 * torch.randn(c, generator=gen))
                m.running_mean.copy_(torch.randn(c, generator=gen))
                m.running_var.copy_(torch.empty(c).uniform_(0.5, 2.0, generator=gen))


def set_regularisation(model, dropout_type, stochastic_depth_type, p):
    """Set p of every Dropout / StochasticDepth; returns the old values for restore_regularisation."""
    saved = []
    for m in model.modules():
        if isinstance(m, (dropout_type, stochastic_depth_type)):
            saved.append((m, m.p))
            m.p = p
    return saved


def restore_regularisation(saved):
    for m, p in saved:
        m.p = p


def torch_train_step(torch, model, x):
    model.zero_grad(set_to_none=True)
    loss = torch.nn.functional.cross_entropy(model(x), torch.from_numpy(TARGETS))
    loss.backward()
    return loss.item(), {k: p.grad.numpy() for k, p in model.named_parameters()}


def test_train_step_matches_torchvision(model_pair, torch, torchvision):
    """One training step with dropout and stochastic depth at p=0 (the models built with dropout=0.0,
    stochastic_depth_prob=0.0 are these with p set to 0): loss, every gradient, every BatchNorm buffer."""
    name, tv_model, ex_model, _ = model_pair
    randomise_batch_norm_for_training(torch, tv_model)
    copy_weights(tv_model, ex_model)
    saved = (set_regularisation(tv_model, torch.nn.Dropout, torchvision.ops.StochasticDepth, 0.0)
             + set_regularisation(ex_model, ex.nn.Dropout, ex.nn.StochasticDepth, 0.0))
    try:
        # float64 torchvision gives the exact gradients; its float32 run shows what float32 rounding alone does
        tv_exact = copy.deepcopy(tv_model).double()
        tv_model.train()
        tv_exact.train()
        ex_model.train()
        x = np.random.default_rng(3).standard_normal((2, 3, TRAIN_RESOLUTION, TRAIN_RESOLUTION)).astype(np.float32)
        tv_loss, tv_grads = torch_train_step(torch, tv_model, torch.from_numpy(x))
        exact_loss, exact_grads = torch_train_step(torch, tv_exact, torch.from_numpy(x).double())
        del tv_exact
        ex_model.zero_grad(set_to_none=True)
        ex_loss = F.cross_entropy(ex_model(ex.tensor(x)), ex.tensor(TARGETS))
        ex_loss.backward()
    finally:
        restore_regularisation(saved)

    assert relative_error(ex_loss.item(), tv_loss) <= TOLERANCE
    assert relative_error(ex_loss.item(), exact_loss) <= TOLERANCE

    bad_grads = []
    for key, p in ex_model.named_parameters():
        assert p.grad is not None, f"{name}: {key} received no gradient"
        exact = exact_grads[key]
        err = float(np.max(np.abs(p.grad.numpy().astype(np.float64) - exact)))
        # Some gradients are exactly zero in exact arithmetic (the bias of a BatchNorm whose output reaches the
        # loss only through a convolution and another training-mode BatchNorm, which removes any per-channel
        # shift) and a few are ill-conditioned at the 1e-4 level in float32; both libraries return rounding
        # noise there, so excite may also be off by 10x torch's own float32 rounding error.
        torch_rounding = float(np.max(np.abs(tv_grads[key].astype(np.float64) - exact)))
        allowed = TOLERANCE * float(np.max(np.abs(exact))) + 10 * torch_rounding
        if err > allowed:
            bad_grads.append(f"{key} (error {err:.2e}, allowed {allowed:.2e})")
    assert not bad_grads, f"{name}: gradients differ from torchvision's: {', '.join(bad_grads[:10])}"

    # one training forward moved every BatchNorm's running statistics by its momentum
    tv_buffers = dict(tv_model.named_buffers())
    bad_buffers = [f"{key} ({relative_error(b.numpy(), tv_buffers[key].numpy()):.2e})"
                   for key, b in ex_model.named_buffers()
                   if relative_error(b.numpy(), tv_buffers[key].numpy()) > TOLERANCE]
    assert not bad_buffers, f"{name}: buffers differ after one training step: {', '.join(bad_buffers[:10])}"


def test_every_parameter_gets_a_finite_gradient_with_dropout_and_stochastic_depth(model_pair):
    """timm-style: with the default dropout and stochastic depth active, backward reaches every parameter."""
    name, _, ex_model, _ = model_pair
    assert any(m.p > 0 for m in ex_model.modules() if isinstance(m, (ex.nn.Dropout, ex.nn.StochasticDepth)))
    ex_model.train()
    ex_model.zero_grad(set_to_none=True)
    logits = ex_model(ex.randn(2, 3, TRAIN_RESOLUTION, TRAIN_RESOLUTION))
    loss = F.cross_entropy(logits, ex.tensor(np.array([1, 4])))
    assert np.isfinite(loss.item())
    loss.backward()
    missing = [k for k, p in ex_model.named_parameters() if p.grad is None]
    assert not missing, f"{name}: no gradient for {missing[:10]}"
    not_finite = [k for k, p in ex_model.named_parameters() if not np.all(np.isfinite(p.grad.numpy()))]
    assert not not_finite, f"{name}: non-finite gradient for {not_finite[:10]}"
