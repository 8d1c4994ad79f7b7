"""excite.graph: capture (nodes named by module path, parameters by state_dict key, the model left as it was),
the printed table, and each pass on its own (batch-norm folding, activation / residual / SE fusion, dead code,
buffer planning)."""
import numpy as np
import pytest

import excite as ex
import excite.nn as nn
import excite.vision.models as exm
from excite.errors import InvalidArgumentError, ShapeError
from excite.graph import capture
from excite.graph.passes import (eliminate_dead_code, fold_batch_norm, fuse_activations, fuse_residual_adds,
                                 fuse_squeeze_excitation, optimize)
from excite.graph.passes.memory import nbytes, plan_memory


def _ops(graph):
    return [node.op for node in graph.nodes]


class Residual(nn.Module):
    def __init__(self, c=4):
        super().__init__()
        self.block = nn.Sequential(nn.Conv2d(c, c, 3, padding=1, bias=False), nn.BatchNorm2d(c), nn.ReLU(),
                                   nn.SqueezeExcitation(c, 2), nn.Conv2d(c, c, 1, bias=False), nn.BatchNorm2d(c))

    def forward(self, x):
        return self.block(x) + x


def _randomised(model, seed=0):
    rng = np.random.default_rng(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            m.running_mean.data[...] = rng.normal(0, 0.3, m.num_features)
            m.running_var.data[...] = rng.uniform(0.5, 2, m.num_features)
            m.weight.data[...] = rng.uniform(0.5, 1.5, m.num_features)
            m.bias.data[...] = rng.normal(0, 0.3, m.num_features)
    return model.eval()


def _run(graph, x):
    from excite.graph.executor import _Plan

    return _Plan(graph).run(x)[0]


def _eager(model, x):
    with ex.no_grad():
        return model(ex.tensor(x)).numpy()


# ----- capture ------------------------------------------------------------------------------------------
def test_nodes_are_named_by_module_path_and_parameters_by_state_dict_key():
    graph = capture(Residual(), np.zeros((1, 4, 5, 5), np.float32))
    names = [node.name for node in graph.nodes]
    assert names == ["block.0", "block.1", "block.2", "block.3.avgpool", "block.3.fc1", "block.3.activation",
                     "block.3.fc2", "block.3.scale_activation", "block.3", "block.4", "block.5", "add"]
    assert _ops(graph)[:3] == ["conv2d", "batch_norm", "activation"]
    assert graph.nodes[0].inputs[1].kind == "parameter" and graph.nodes[0].inputs[1].name == "block.0.weight"
    assert set(graph.parameters) <= set(Residual().state_dict())
    assert graph.inputs[0].name == "x" and graph.outputs == [graph.nodes[-1].output]
    assert list(graph.visible) == ["x", "block.0", "block.1", "block.2", "block.3", "block.4", "block.5", "add"]


def test_the_graph_prints_as_a_table_one_line_per_node():
    graph = capture(Residual(), np.zeros((2, 4, 5, 5), np.float32))
    lines = str(graph).splitlines()
    assert lines[0].split() == ["name", "op", "inputs", "attributes", "shape"]
    assert len(lines) == 2 + 1 + len(graph.nodes) + 1  # header, rule, input, nodes, output
    row = next(line for line in lines if line.startswith("block.2 "))
    assert "activation[relu]" in row and "block.1" in row and "[2, 4, 5, 5]" in row
    assert repr(graph) == f"Graph({len(graph.nodes)} nodes, {len(graph.parameters)} parameters)"


def test_capture_leaves_modes_buffers_and_random_state_alone_in_both_modes():
    model = exm.mobilenet_v3_small(num_classes=10).train()
    model.features[2].eval()
    state = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    modes = [m.training for m in model.modules()]
    ex.manual_seed(3)
    expected_draw = ex.rand(3).numpy()
    ex.manual_seed(3)
    for training in (True, False):
        capture(model, np.zeros((2, 3, 32, 32), np.float32), training=training)
    np.testing.assert_array_equal(ex.rand(3).numpy(), expected_draw)
    assert [m.training for m in model.modules()] == modes
    for k, v in model.state_dict().items():
        np.testing.assert_array_equal(v.numpy(), state[k], err_msg=k)


def test_a_detached_alias_and_a_constant_are_told_apart():
    class Odd(nn.Module):
        def forward(self, x):
            y = (x * 2).detach()  # the same array as x * 2: still the graph's value
            return y + ex.tensor(np.ones(3, np.float32))  # a real constant

    graph = capture(Odd(), np.zeros((2, 3), np.float32))
    add = graph.nodes[-1]
    assert add.inputs[0] is graph.nodes[0].output and add.inputs[1].kind == "constant"


def test_capture_errors_name_the_layer():
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(5, 2, 1))
    with pytest.raises(ShapeError, match=r"layer '1' \(Conv2d\): conv2d: .*\[N, 5, H, W\], got \[1, 4, 6, 6\]"):
        capture(model, np.zeros((1, 3, 8, 8), np.float32))
    with pytest.raises(InvalidArgumentError, match="excite.nn.Module"):
        capture(lambda t: t, np.zeros(3))
    with pytest.raises(InvalidArgumentError, match="Tensor or a NumPy array, got list"):
        capture(nn.ReLU(), [1.0])


# ----- passes ---------------------------------------------------------------------------------------------
def test_fold_batch_norm_puts_the_affine_map_into_the_convolution():
    model = _randomised(nn.Sequential(nn.Conv2d(3, 4, 3, bias=True), nn.BatchNorm2d(4), nn.Conv2d(4, 4, 1),
                                      nn.BatchNorm2d(4)))
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32)
    graph = capture(model, x)
    assert fold_batch_norm(graph) == 2
    assert _ops(graph) == ["conv2d", "conv2d"]
    conv = graph.nodes[0]
    assert conv.inputs[2] is None and conv.attrs["folded"] == "1" and conv.attrs["scale"].shape == (4,)
    np.testing.assert_allclose(_run(graph, x), _eager(model, x), rtol=1e-5, atol=1e-6)


def test_fold_batch_norm_keeps_a_batch_norm_whose_input_is_read_twice():
    class TwoReaders(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv, self.norm = nn.Conv2d(3, 3, 1), nn.BatchNorm2d(3)

        def forward(self, x):
            y = self.conv(x)
            return self.norm(y) + y

    graph = capture(_randomised(TwoReaders()), np.zeros((1, 3, 4, 4), np.float32))
    assert fold_batch_norm(graph) == 0 and "batch_norm" in _ops(graph)


def test_fuse_activations_and_residual_adds_into_the_convolution():
    model = _randomised(Residual())
    x = np.random.default_rng(1).standard_normal((2, 4, 7, 7)).astype(np.float32)
    graph = capture(model, x)
    fold_batch_norm(graph)
    assert fuse_activations(graph) == 3  # block.2, and the SE block's two activations
    assert fuse_residual_adds(graph) == 1
    last = graph.nodes[-1]
    assert last.op == "conv2d" and last.attrs["residual"] and last.inputs[3] is graph.inputs[0]
    assert graph.nodes[0].attrs["activation"] == "relu"
    np.testing.assert_allclose(_run(graph, x), _eager(model, x), rtol=1e-5, atol=1e-6)


def test_a_residual_is_not_fused_where_an_activation_follows_the_add():
    class PostActivation(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 3, 3, padding=1)

        def forward(self, x):
            return (self.conv(x) + x).relu()

    model = PostActivation()
    x = np.random.default_rng(2).standard_normal((1, 3, 5, 5)).astype(np.float32)
    graph = capture(model, x)
    fuse_residual_adds(graph)
    assert fuse_activations(graph) == 0  # relu after the add cannot go before it
    assert _ops(graph) == ["conv2d", "activation"]
    np.testing.assert_allclose(_run(graph, x), _eager(model, x), rtol=1e-6, atol=1e-6)


def test_squeeze_excitation_blocks_are_recognised_in_any_module():
    class HandWrittenSE(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc1, self.fc2 = nn.Conv2d(8, 2, 1), nn.Conv2d(2, 8, 1)

        def forward(self, x):
            s = nn.functional.adaptive_avg_pool2d(x, 1)
            return x * self.fc2(self.fc1(s).relu()).sigmoid()

    model = HandWrittenSE()
    x = np.random.default_rng(3).standard_normal((2, 8, 6, 6)).astype(np.float32)
    graph = capture(model, x)
    fuse_activations(graph)
    assert fuse_squeeze_excitation(graph) == 1
    (node,) = graph.nodes
    assert node.op == "se" and node.attrs == dict(activation="relu", scale_activation="sigmoid")
    np.testing.assert_allclose(_run(graph, x), _eager(model, x), rtol=1e-5, atol=1e-6)


def test_dead_code_is_dropped():
    class Wasteful(nn.Module):
        def forward(self, x):
            unused = x * 3  # noqa: F841
            return x + 1

    graph = capture(Wasteful(), np.zeros(2, np.float32))
    assert eliminate_dead_code(graph) == 1 and _ops(graph) == ["add"]


def test_optimize_runs_the_pipeline_on_a_real_network():
    graph = optimize(capture(exm.mobilenet_v3_large(), np.zeros((1, 3, 32, 32), np.float32)))
    ops = _ops(graph)
    assert set(ops) == {"conv2d", "se", "adaptive_avg_pool2d", "reshape", "linear"}
    assert ops.count("se") == 8
    assert graph.node("classifier.0").attrs["activation"] == "hardswish"


# ----- buffer planning ------------------------------------------------------------------------------------
def test_buffers_are_shared_only_by_values_whose_lifetimes_do_not_overlap():
    graph = optimize(capture(exm.efficientnet_b0(), np.zeros((1, 3, 64, 64), np.float32)))
    wanted = {node.output for node in graph.nodes if node.op in ("conv2d", "se")}
    plan = plan_memory(graph, wanted)
    position = {node.output: i for i, node in enumerate(graph.nodes)}
    last = {}
    for i, node in enumerate(graph.nodes):
        for v in node.inputs:
            if v in wanted:
                last[v] = i
    for v in graph.outputs:
        last[v] = len(graph.nodes)
    by_slot = {}
    for v, slot in plan.slot_of.items():
        assert nbytes(v) <= plan.slot_sizes[slot]
        by_slot.setdefault(slot, []).append((position[v], last.get(v, position[v])))
    for intervals in by_slot.values():
        intervals.sort()
        for (_, end), (start, _) in zip(intervals, intervals[1:]):
            assert end < start, "two values live in one buffer at once"
    assert len(plan.slot_sizes) < len(wanted) / 4  # a few buffers serve the whole network
    assert plan.total_bytes < sum(nbytes(v) for v in wanted) / 4


def test_a_view_keeps_the_buffer_it_views_alive():
    class Views(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1, self.conv2 = nn.Conv2d(2, 2, 1), nn.Conv2d(2, 2, 1)

        def forward(self, x):
            a = self.conv1(x)
            flat = a.flatten(1)  # a view of conv1's buffer, read after conv2 ran
            b = self.conv2(x)
            return flat + b.flatten(1)

    graph = capture(Views(), np.zeros((1, 2, 3, 3), np.float32))
    convs = {node.output for node in graph.nodes if node.op == "conv2d"}
    plan = plan_memory(graph, convs)
    assert len(set(plan.slot_of.values())) == 2
