"""MaxViT-T against torchvision: layout, parameter count, repr, init, eval logits at 224, one training step."""
import copy

import numpy as np
import pytest

import excite as ex
import excite.nn.functional as F
import excite.vision.models as exm
from test_models import (TOLERANCE, build_pair, initialisation_mismatches, randomise_batch_norm,
                         randomise_batch_norm_for_training, relative_error, restore_regularisation,
                         set_regularisation, torch_train_step)

TARGETS = np.array([3, 7])


@pytest.fixture(scope="module", autouse=True)
def torch_on_one_thread(torch):
    """As in test_models: a single-threaded oracle is far steadier on the shared 2-core machine."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def model_pair(torch, torchvision):
    tv_model, ex_model = build_pair(torch, torchvision, "maxvit_t")
    # the relative position indices are constants, not draws (test_layout_parameter_count_and_repr compares them)
    problems = [p for p in initialisation_mismatches("maxvit_t", tv_model, ex_model)
                if "relative_position_index" not in p]
    return tv_model, ex_model, problems


def randomise_layer_norms(torch, tv_model, seed=1):
    """LayerNorm weights and biases away from their ones / zeros init, so their gradients are generic."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in tv_model.modules():
            if isinstance(m, torch.nn.LayerNorm):
                m.weight.copy_(torch.empty(m.weight.shape).uniform_(0.5, 1.5, generator=gen))
                m.bias.copy_(0.2 * torch.randn(m.bias.shape, generator=gen))


def test_layout_parameter_count_and_repr(model_pair, torchvision):
    tv_model, ex_model, _ = model_pair
    assert ([(k, tuple(v.shape)) for k, v in ex_model.state_dict().items()]
            == [(k, tuple(v.shape)) for k, v in tv_model.state_dict().items()])
    assert [k for k, _ in ex_model.named_parameters()] == [k for k, _ in tv_model.named_parameters()]
    expected = torchvision.models.get_model_weights("maxvit_t").DEFAULT.meta["num_params"]
    assert sum(p.numel() for p in ex_model.parameters()) == expected == 30919624
    assert repr(ex_model) == repr(tv_model)
    # the relative position index buffers are torchvision's (int64, in the state_dict)
    tv_state = tv_model.state_dict()
    for k, v in ex_model.state_dict().items():
        if k.endswith("relative_position_index"):
            np.testing.assert_array_equal(v.numpy(), tv_state[k].numpy())


def test_initialisation_follows_torchvision(model_pair):
    _, _, problems = model_pair
    assert not problems, "; ".join(problems[:10])


def test_eval_logits_match_torchvision_at_224(model_pair, torch):
    tv_model, ex_model, _ = model_pair
    x = np.random.default_rng(1).standard_normal((2, 3, 224, 224)).astype(np.float32)
    randomise_batch_norm(torch, tv_model, x)
    randomise_layer_norms(torch, tv_model)
    ex_model.load_state_dict({k: v.detach().numpy().copy() for k, v in tv_model.state_dict().items()})
    tv_model.eval()
    ex_model.eval()
    with torch.no_grad():
        expected = tv_model(torch.from_numpy(x)).numpy()
    with ex.no_grad():
        actual = ex_model(ex.tensor(x)).numpy()
    assert actual.shape == (2, 1000)
    err = relative_error(actual, expected)
    assert err <= TOLERANCE, f"maxvit_t: logits differ by {err:.2e} of the largest logit"


def test_train_step_matches_torchvision(model_pair, torch, torchvision):
    """Stochastic depth at p=0; batch 2 at 224 (the attention grids are built for one input size): the loss,
    every parameter's gradient and every BatchNorm buffer."""
    tv_model, ex_model, _ = model_pair
    randomise_batch_norm_for_training(torch, tv_model)
    randomise_layer_norms(torch, tv_model)
    ex_model.load_state_dict({k: v.detach().numpy().copy() for k, v in tv_model.state_dict().items()})
    saved = (set_regularisation(tv_model, torch.nn.Dropout, torchvision.ops.StochasticDepth, 0.0)
             + set_regularisation(ex_model, ex.nn.Dropout, ex.nn.StochasticDepth, 0.0))
    try:
        tv_exact = copy.deepcopy(tv_model).double()
        for m in (tv_model, tv_exact, ex_model):
            m.train()
        x = np.random.default_rng(3).standard_normal((2, 3, 224, 224)).astype(np.float32)
        tv_loss, tv_grads = torch_train_step(torch, tv_model, torch.from_numpy(x))
        exact_loss, exact_grads = torch_train_step(torch, tv_exact, torch.from_numpy(x).double())
        del tv_exact
        ex_model.zero_grad(set_to_none=True)
        ex_loss = F.cross_entropy(ex_model(ex.tensor(x)), ex.tensor(TARGETS))
        ex_loss.backward()
    finally:
        restore_regularisation(saved)

    assert relative_error(ex_loss.item(), exact_loss) <= TOLERANCE
    bad = []
    for key, p in ex_model.named_parameters():
        assert p.grad is not None, f"{key} received no gradient"
        exact = exact_grads[key]
        err = float(np.max(np.abs(p.grad.numpy().astype(np.float64) - exact)))
        torch_rounding = float(np.max(np.abs(tv_grads[key].astype(np.float64) - exact)))
        allowed = TOLERANCE * float(np.max(np.abs(exact))) + 10 * torch_rounding
        if err > allowed:
            bad.append(f"{key} (error {err:.2e}, allowed {allowed:.2e})")
    assert not bad, f"maxvit_t: gradients differ from torchvision's: {', '.join(bad[:10])}"
    tv_buffers = dict(tv_model.named_buffers())
    bad = [k for k, b in ex_model.named_buffers() if relative_error(b.numpy(), tv_buffers[k].numpy()) > TOLERANCE]
    assert not bad, f"maxvit_t: buffers differ after one training step: {bad[:10]}"


def test_input_size_must_split_into_partitions():
    with pytest.raises(ex.InvalidArgumentError, match="is not divisible by partition size 7"):
        exm.maxvit_t(input_size=(200, 200))
    model = exm.maxvit_t(input_size=(448, 448), num_classes=3)  # another size builds its own grids
    assert model.blocks[0].grid_size == (112, 112)
    with pytest.raises(ex.ShapeError, match="built for 56x56 feature maps"):
        with ex.no_grad():
            exm.maxvit_t(num_classes=3).eval()(ex.randn(1, 3, 448, 448))
