"""Feature extraction against torchvision's own: node names, returned features (eval and train mode), their
gradients, the compiled extractor, and bad return_nodes."""
import numpy as np
import pytest

import excite as ex
import excite.vision.models as exm
from excite.vision.models.feature_extraction import create_feature_extractor, get_graph_node_names
from test_models import build_pair, copy_weights, randomise_batch_norm, relative_error

MODELS = ["mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "efficientnet_v2_s"]
RETURN_NODES = {
    "mobilenet_v3_small": {"features.1.block.1": "se", "features.3": "block3", "features.5.add": "add5",
                           "avgpool": "pool", "flatten": "flat"},
    "mobilenet_v3_large": ["features.2", "features.6.block.2", "features.12"],
    "efficientnet_b0": {"features.2.1.stochastic_depth": "sd", "features.3": "stage3", "features.4.0.block.2": "se"},
    "efficientnet_v2_s": {"features.2.1.add": "add", "features.5": "stage5"},
}


@pytest.fixture(scope="module")
def tv_feature_extraction(torchvision):
    from torchvision.models import feature_extraction

    return feature_extraction


@pytest.mark.parametrize("name", MODELS + ["efficientnet_b3"])
def test_node_names_are_torchvisions_in_both_modes(torchvision, tv_feature_extraction, name):
    ours = get_graph_node_names(exm.get_model(name), example_input=np.zeros((1, 3, 64, 64), np.float32))
    assert ours == tv_feature_extraction.get_graph_node_names(torchvision.models.get_model(name))


def _pair(torch, torchvision, name, x):
    kwargs = {"stochastic_depth_prob": 0.0} if name.startswith("efficientnet") else {}  # random in train mode
    tv_model, ex_model = build_pair(torch, torchvision, name, **kwargs)
    randomise_batch_norm(torch, tv_model, x)
    copy_weights(tv_model, ex_model)
    return tv_model, ex_model


@pytest.mark.parametrize("name", MODELS)
def test_features_and_their_gradients_match_torchvision(torch, torchvision, tv_feature_extraction, name):
    x = np.random.default_rng(0).standard_normal((2, 3, 64, 64)).astype(np.float32)
    tv_model, ex_model = _pair(torch, torchvision, name, x)
    nodes = RETURN_NODES[name]
    example = np.zeros((1, 3, 64, 64), np.float32)
    ours = create_feature_extractor(ex_model, nodes, example_input=example)
    theirs = tv_feature_extraction.create_feature_extractor(tv_model, nodes)
    for training in (False, True):  # train mode: batch statistics in every BatchNorm
        ours.train(training)
        theirs.train(training)
        xe = ex.tensor(x, requires_grad=True)
        xt = torch.tensor(x, requires_grad=True)
        got, want = ours(xe), theirs(xt)
        assert list(got) == list(want)
        for key in want:
            assert relative_error(got[key].numpy(), want[key].detach().numpy()) < 1e-4, (key, training)
        if training:
            # random weights: a plain sum of batch-normalised features has a zero gradient in theory
            rng = np.random.default_rng(2)
            weights = {k: rng.standard_normal(f.shape).astype(np.float32) for k, f in want.items()}
            sum((got[k] * ex.tensor(w)).sum() for k, w in weights.items()).backward()
            sum((want[k] * torch.tensor(w)).sum() for k, w in weights.items()).backward()
            assert relative_error(xe.grad.numpy(), xt.grad.numpy()) < 1e-4
            grads = {k: p.grad for k, p in ex_model.named_parameters() if p.grad is not None}
            expected = {k: p.grad.numpy() for k, p in tv_model.named_parameters() if p.grad is not None}
            assert grads and set(grads) == set(expected)
            # some gradients are zero in theory (a batch norm's bias before another batch norm): compare
            # every one on the scale of the largest
            scale = max(np.abs(g).max() for g in expected.values())
            for k, g in expected.items():
                assert np.abs(grads[k].numpy() - g).max() <= 1e-4 * scale, k


def test_the_compiled_extractor_returns_the_same_features():
    model = exm.mobilenet_v3_small().eval()
    x = np.random.default_rng(1).standard_normal((2, 3, 64, 64)).astype(np.float32)
    extractor = create_feature_extractor(model, RETURN_NODES["mobilenet_v3_small"], example_input=x[:1]).eval()
    compiled = ex.compile(extractor, x)
    with ex.no_grad():
        eager = extractor(ex.tensor(x))
    got = compiled(x)
    assert list(got) == list(eager)
    for key in eager:
        assert relative_error(got[key].numpy(), eager[key].numpy()) < 1e-5, key
    assert "classifier.0" not in str(compiled.graph)  # the graph stops at the last requested node


def test_the_extractor_shares_the_models_parameters_and_names():
    model = exm.mobilenet_v3_small()
    extractor = create_feature_extractor(model, ["features.2"], example_input=np.zeros((1, 3, 32, 32), np.float32))
    assert list(extractor.state_dict()) == list(model.state_dict())
    assert extractor.features[0][0].weight is model.features[0][0].weight


def test_unknown_or_conflicting_return_nodes_are_refused():
    model = exm.mobilenet_v3_small()
    example = np.zeros((1, 3, 32, 32), np.float32)
    with pytest.raises(ValueError, match=r"node: 'features\.99' is not present in model.*Valid nodes: x, features\.0, "):
        create_feature_extractor(model, ["features.99"], example_input=example)
    with pytest.raises(ValueError, match="Either `return_nodes`"):
        create_feature_extractor(model, example_input=example)
    with pytest.raises(ValueError, match="then both should be specified"):
        create_feature_extractor(model, train_return_nodes=["x"], example_input=example)
    with pytest.raises(ValueError, match="torch.fx options"):
        get_graph_node_names(model, tracer_kwargs={"leaf_modules": []})
