"""excite.compile runs the early layers of a batch a few images at a time (`excite.graph.schedule`): the
segments it picks, and outputs equal to eager, to the whole-batch plan and to torchvision with them on.

The budget is made small here so that small test images split too (at the default, a batch splits
when its activations outgrow the caches, as at 224 x 224)."""
import numpy as np
import pytest

import excite as ex
import excite.nn as nn
import excite.vision.models as exm
from excite.graph import schedule
from excite.vision.models.feature_extraction import create_feature_extractor
from test_compile import ALL_MODELS, _Unusual, _eager, _random_statistics, run_in_threads
from test_models import build_pair, copy_weights, randomise_batch_norm, relative_error

SMALL = 24 << 10  # bytes: at 32 x 32 the stem and the first blocks of every registry network go 1-2 images at a time


@pytest.fixture
def small_budget(monkeypatch):
    monkeypatch.setattr(schedule, "SUB_BATCH_BYTES", SMALL)


def _split(compiled, shape):
    """(start node name, sub-batch size or None) of each segment of the plan for ``shape``."""
    plan = compiled._plan_for(tuple(shape))
    return [(plan.graph.nodes[a].name, None if sub is None else sub.size) for a, _, sub in plan.segments]


def test_segments_cover_the_graph_never_shrink_and_cut_where_one_value_crosses(small_budget):
    model = exm.mobilenet_v3_small(num_classes=10).eval()
    graph = ex.compile(model, np.zeros((8, 3, 32, 32), np.float32)).graph
    segments = schedule.sub_batches(graph)
    assert segments[0][0] == 0 and segments[-1][1] == len(graph.nodes)
    assert all(a[1] == b[0] for a, b in zip(segments, segments[1:]))
    sizes = [8 if size is None else size for _, _, size in segments]
    assert len(set(sizes)) >= 3 and sizes == sorted(set(sizes)) and all(8 % s == 0 for s in sizes)
    for start, _, _ in segments[1:]:  # cut between blocks, after a projection: the fewest bytes cross there
        assert graph.nodes[start].name.endswith("block.0.0") or graph.nodes[start].op != "conv2d", graph.nodes[start].name
    # and a budget the whole batch fits in: one segment
    assert schedule.sub_batches(graph, budget=1 << 40) == [(0, len(graph.nodes), None)]


def test_a_batch_of_one_and_ops_across_the_batch_run_whole(small_budget):
    model = exm.mobilenet_v3_small(num_classes=10).eval()
    assert _split(ex.compile(model, np.zeros((1, 3, 32, 32), np.float32)), (1, 3, 32, 32)) == [("features.0.0", None)]

    class Centred(nn.Module):  # subtracts the batch mean: its images are not independent
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Conv2d(3, 8, 3, padding=1), nn.Conv2d(8, 8, 1)

        def forward(self, x):
            y = self.a(x)
            return self.b(y - y.mean(0, keepdim=True))

    x = np.random.default_rng(0).standard_normal((4, 3, 32, 32)).astype(np.float32)
    compiled = ex.compile(Centred().eval(), x)
    plan = compiled._plan_for(x.shape)
    sizes = {node.op: None if sub is None else sub.size for a, b, sub in plan.segments for node in plan.graph.nodes[a:b]}
    assert sizes == {"conv2d": 1, "function": None, "sub": None}  # the convolutions one image at a time
    assert relative_error(compiled(x).numpy(), _eager(compiled.module, x)) < 1e-6


@pytest.mark.parametrize("name", ALL_MODELS)
def test_every_registry_model_gives_its_eager_output_in_sub_batches(small_budget, name):
    ex.manual_seed(0)
    model = _random_statistics(exm.get_model(name, num_classes=10)).eval()
    x = np.random.default_rng(1).standard_normal((4, 3, 32, 32)).astype(np.float32)
    compiled = ex.compile(model, x)
    assert 1 in {size for _, size in _split(compiled, x.shape)}, "the test's budget should split"
    got = compiled(x).numpy()
    assert relative_error(got, _eager(model, x)) < 1e-5
    schedule.SUB_BATCH_BYTES = 1 << 40  # (restored by the fixture) the whole batch through every layer
    whole = ex.compile(model, x)
    assert _split(whole, x.shape) == [(whole.graph.nodes[0].name, None)]
    assert relative_error(got, whole(x).numpy()) < 1e-5


@pytest.mark.parametrize("name", ["mobilenet_v3_large", "efficientnet_b0"])
def test_sub_batches_equal_torchvision(torch, torchvision, small_budget, name):
    x = np.random.default_rng(2).standard_normal((6, 3, 48, 48)).astype(np.float32)
    tv_model, ex_model = build_pair(torch, torchvision, name)
    randomise_batch_norm(torch, tv_model, x)
    copy_weights(tv_model, ex_model)
    tv_model.eval()
    compiled = ex.compile(ex_model.eval(), x)
    sizes = {size for _, size in _split(compiled, x.shape)}
    assert 1 in sizes and len(sizes) >= 2
    with torch.no_grad():
        expected = tv_model(torch.from_numpy(x)).numpy()
    assert relative_error(compiled(x).numpy(), expected) < 1e-4


def test_features_taken_inside_sub_batches_come_out_whole(small_budget):
    model = _random_statistics(exm.mobilenet_v3_small(num_classes=10)).eval()
    nodes = {"features.1": "early", "features.4.block.2": "se", "features.12": "late"}
    extractor = create_feature_extractor(model, return_nodes=nodes, example_input=ex.zeros(1, 3, 32, 32)).eval()
    x = np.random.default_rng(3).standard_normal((4, 3, 32, 32)).astype(np.float32)
    compiled = ex.compile(extractor, x)
    assert (1 in {size for _, size in _split(compiled, x.shape)})
    got = compiled(x)
    with ex.no_grad():
        want = extractor(ex.tensor(x))
    assert list(got) == ["early", "se", "late"]
    for key in want:
        assert got[key].shape == want[key].shape and relative_error(got[key].numpy(), want[key].numpy()) < 1e-5, key


def test_ops_without_a_fused_rule_and_float64_in_sub_batches(monkeypatch):
    monkeypatch.setattr(schedule, "SUB_BATCH_BYTES", 256)
    model = _Unusual().eval()
    x = np.random.default_rng(5).standard_normal((4, 3, 5, 7)).astype(np.float32)
    compiled = ex.compile(model, x)
    assert _split(compiled, x.shape)[0] == ("conv", 1)
    with ex.no_grad():
        want = model(ex.tensor(x))
    for g, w in zip(compiled(x), want):
        assert g.shape == w.shape and relative_error(g.numpy(), w.numpy()) < 1e-6
    monkeypatch.setattr(schedule, "SUB_BATCH_BYTES", SMALL)
    model = exm.mobilenet_v3_small(num_classes=5).double().eval()
    x = np.random.default_rng(2).standard_normal((4, 3, 32, 32))
    compiled = ex.compile(model, x)
    assert 1 in {size for _, size in _split(compiled, x.shape)}
    assert relative_error(compiled(x).numpy(), _eager(model, x)) < 1e-12


def test_one_model_in_sub_batches_serves_several_threads(small_budget):
    model = _random_statistics(exm.mobilenet_v3_small(num_classes=10)).eval()
    rng = np.random.default_rng(4)
    inputs = [rng.standard_normal((b, 3, 32, 32)).astype(np.float32) for b in (4, 2, 4, 6)]
    compiled = ex.compile(model, inputs[0])
    expected = [compiled(x).numpy() for x in inputs]
    for got, want in zip(run_in_threads(compiled, inputs, repeats=4), expected):
        np.testing.assert_array_equal(got, want)
