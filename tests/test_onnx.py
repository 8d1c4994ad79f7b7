"""excite.onnx: exported graphs run on onnxruntime and agree with excite's own eval forward.

onnxruntime is an independent implementation of every op, so agreement (1e-4 relative to the
largest logit) checks the exporter's graph against excite's forward. Budget: ~60 s, most of it
building, exporting and running the EfficientNet-B5...B7 / V2-M/L models once each.
"""
import hashlib
import sys

import numpy as np
import onnx  # test extra, like onnxruntime: onnxruntime is the reference these tests compare with
import pytest

import excite as ex
import excite.vision.models as models
from excite import nn
from excite.errors import CheckpointError, InvalidArgumentError, ShapeError

from excite.onnx import OnnxModel, export, load_onnx, register_op

# the big networks run at a reduced resolution: excite's forward is the NumPy reference here
RESOLUTION = {
    "mobilenet_v3_small": 64, "mobilenet_v3_large": 64,
    "efficientnet_b0": 64, "efficientnet_b1": 64, "efficientnet_b2": 64, "efficientnet_b3": 64,
    "efficientnet_b4": 48, "efficientnet_b5": 48, "efficientnet_b6": 48, "efficientnet_b7": 48,
    "efficientnet_v2_s": 64, "efficientnet_v2_m": 48, "efficientnet_v2_l": 48,
    "regnet_y_400mf": 64, "regnet_y_1_6gf": 48,
}


def relative_error(got, expected):
    return float(np.abs(got - expected).max() / np.abs(expected).max())


def randomize_batchnorm(model, seed=0):
    """Non-trivial running statistics and affine parameters, so BatchNorm is not the identity."""
    rng = np.random.default_rng(seed)
    for m in model.modules():
        if isinstance(m, nn.BatchNorm2d):
            c = m.num_features
            m.running_mean.data[...] = rng.normal(0.0, 0.5, c)
            m.running_var.data[...] = rng.uniform(0.5, 2.0, c)
            m.weight.data[...] = rng.uniform(0.5, 1.5, c)
            m.bias.data[...] = rng.normal(0.0, 0.2, c)
    return model


def fingerprint(model):
    """Everything export must leave alone: every state_dict entry's bytes, and each module's mode."""
    state = {k: (v.dtype.str, v.shape, hashlib.blake2b(np.ascontiguousarray(v.numpy()).tobytes()).hexdigest())
             for k, v in model.state_dict().items()}
    modes = [(name, m.training) for name, m in model.named_modules()]
    return state, modes


def excite_eval(model, x):
    with ex.no_grad():
        return model(ex.tensor(x)).numpy()


@pytest.fixture(scope="module", params=sorted(RESOLUTION))
def exported(request, tmp_path_factory):
    """One model per parameter: built, randomised, exported once; its checks share the file."""
    name = request.param
    ex.manual_seed(0)
    model = randomize_batchnorm(models.get_model(name)).eval()
    res = RESOLUTION[name]
    x = np.random.default_rng(1).standard_normal((4, 3, res, res)).astype(np.float32)
    before = fingerprint(model)
    path = tmp_path_factory.mktemp(name) / f"{name}.onnx"
    export(model, x[:1], path)  # batch 1 example; dynamic batch is the default
    after = fingerprint(model)
    runner = OnnxModel(path)
    yield dict(name=name, model=model, x=x, path=path, before=before, after=after,
               out1=runner(x[:1]), out4=runner(x), expected=excite_eval(model, x))
    path.unlink()


def test_onnxruntime_matches_excite_at_batch_1_and_4(exported):
    expected = exported["expected"]
    assert exported["out4"].shape == expected.shape == (4, 1000)
    assert exported["out1"].shape == (1, 1000)
    assert relative_error(exported["out4"], expected) < 1e-4
    assert relative_error(exported["out1"], expected[:1]) < 1e-4


def test_graph_passes_checker_with_named_io(exported):
    onnx.checker.check_model(str(exported["path"]), full_check=True)
    graph = onnx.load(str(exported["path"]), load_external_data=False).graph
    assert [i.name for i in graph.input] == ["input"]
    assert [o.name for o in graph.output] == ["logits"]
    dims = graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param == "batch" and [d.dim_value for d in dims[1:]] == list(exported["x"].shape[1:])


def test_initializers_are_the_state_dict(exported):
    graph = onnx.load(str(exported["path"])).graph
    inits = {t.name: onnx.numpy_helper.to_array(t) for t in graph.initializer}
    state = {k: v.numpy() for k, v in exported["model"].state_dict().items()
             if not k.endswith("num_batches_tracked")}
    # every parameter and running statistic is stored under its state_dict key; only Clip's bounds are extra
    assert set(inits) - set(state) <= {"relu6_min", "relu6_max"}
    assert set(state) <= set(inits)
    for k, v in state.items():
        np.testing.assert_array_equal(inits[k], v, err_msg=k)


def test_export_leaves_the_model_unchanged(exported):
    assert exported["after"] == exported["before"]


# ----- options ------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ["mobilenet_v3_small", "efficientnet_b0", "efficientnet_v2_s"])
def test_folded_batchnorm_matches(name, tmp_path):
    model = randomize_batchnorm(models.get_model(name)).eval()
    x = np.random.default_rng(2).standard_normal((2, 3, 32, 32)).astype(np.float32)
    path = tmp_path / "folded.onnx"
    proto = export(model, x[:1], path, fold_batchnorm=True)
    ops = {n.op_type for n in proto.graph.node}
    assert "BatchNormalization" not in ops and "Conv" in ops
    assert any(t.name == "features.0.0.weight_bn_folded" for t in proto.graph.initializer)
    assert relative_error(OnnxModel(path)(x), excite_eval(model, x)) < 1e-4


def test_training_mode_model_is_exported_with_inference_semantics(tmp_path):
    model = randomize_batchnorm(models.mobilenet_v3_small()).train()
    before = fingerprint(model)
    x = np.random.default_rng(3).standard_normal((2, 3, 64, 64)).astype(np.float32)
    export(model, x[:1], tmp_path / "m.onnx")
    assert fingerprint(model) == before  # still in training mode, BatchNorm statistics untouched
    got = OnnxModel(tmp_path / "m.onnx")(x)
    assert relative_error(got, excite_eval(model.eval(), x)) < 1e-4


@pytest.mark.parametrize("opset", [14, 17, 21])
def test_opsets(opset, tmp_path):
    model = randomize_batchnorm(models.mobilenet_v3_small(num_classes=10)).eval()
    x = np.random.default_rng(4).standard_normal((3, 3, 32, 32)).astype(np.float32)
    proto = export(model, x[:1], tmp_path / "m.onnx", opset=opset)
    assert proto.opset_import[0].version == opset
    assert relative_error(OnnxModel(tmp_path / "m.onnx")(x), excite_eval(model, x)) < 1e-4


def test_bad_opset_and_example_input(tmp_path):
    model = nn.Sequential(nn.ReLU())
    x = np.zeros((1, 3, 8, 8), np.float32)
    for opset in (13, 10_000, "17", True):
        with pytest.raises(InvalidArgumentError, match="opset"):
            export(model, x, tmp_path / "m.onnx", opset=opset)
    with pytest.raises(InvalidArgumentError, match="floating-point"):
        export(model, x.astype(np.int64), tmp_path / "m.onnx")
    with pytest.raises(InvalidArgumentError, match="Module"):
        export(lambda t: t, x, tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


def test_fixed_batch_graph(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Flatten(), nn.Linear(4 * 6 * 6, 5)).eval()
    x = np.random.default_rng(5).standard_normal((2, 3, 8, 8)).astype(np.float32)
    export(model, x, tmp_path / "m.onnx", dynamic_batch=False)
    runner = OnnxModel(tmp_path / "m.onnx")
    assert runner.input_shape == (2, 3, 8, 8)
    assert relative_error(runner(x), excite_eval(model, x)) < 1e-5
    with pytest.raises(ShapeError, match=r"\[2, 3, 8, 8\].*\[1, 3, 8, 8\]"):
        runner(x[:1])


# ----- layers the model zoo does not use ----------------------------------------------------
def test_less_common_layer_settings(tmp_path):
    ex.manual_seed(1)
    bn = nn.BatchNorm2d(6, affine=False)
    bn.running_mean.data[...] = np.linspace(-1, 1, 6)
    bn.running_var.data[...] = np.linspace(0.5, 2, 6)
    model = nn.Sequential(
        nn.Conv2d(3, 6, 4, padding="same", dilation=1),  # even kernel: asymmetric padding
        bn,
        nn.Tanh(),
        nn.Conv2d(6, 6, 3, padding=(2, 1), dilation=(2, 1), groups=3, bias=False),
        nn.ReLU6(),
        nn.Conv2d(6, 6, 3, stride=2, padding="valid"),
        nn.Dropout(0.5),
        nn.Identity(),
        nn.AdaptiveAvgPool2d((2, None)),
        nn.Flatten(start_dim=2),
        nn.Linear(12, 7),  # on a 3-D input: MatMul + Add
        nn.SiLU(),
        nn.Flatten(),
        nn.Linear(6 * 7, 4, bias=False),
    ).eval()
    x = np.random.default_rng(6).standard_normal((3, 3, 14, 14)).astype(np.float32)
    for fold in (False, True):
        export(model, x[:1], tmp_path / "m.onnx", fold_batchnorm=fold)
        assert relative_error(OnnxModel(tmp_path / "m.onnx")(x), excite_eval(model, x)) < 1e-5


def test_shared_parameter_is_stored_once(tmp_path):
    conv = nn.Conv2d(4, 4, 1)
    model = nn.Sequential(conv, nn.ReLU(), conv).eval()
    x = np.random.default_rng(7).standard_normal((2, 4, 5, 5)).astype(np.float32)
    proto = export(model, x[:1], tmp_path / "m.onnx")
    assert sorted(t.name for t in proto.graph.initializer) == ["0.bias", "0.weight"]
    assert relative_error(OnnxModel(tmp_path / "m.onnx")(x), excite_eval(model, x)) < 1e-5


def test_identity_model(tmp_path):
    x = np.random.default_rng(8).standard_normal((2, 3, 4, 4)).astype(np.float32)
    export(nn.Identity(), x, tmp_path / "m.onnx")
    np.testing.assert_array_equal(OnnxModel(tmp_path / "m.onnx")(x), x)


def test_layer_argument_errors(tmp_path):
    x = np.zeros((1, 3, 10, 10), np.float32)
    with pytest.raises(ShapeError, match=r"layer '1' \(Conv2d\).*\[N, 5, H, W\].*\[1, 4, 8, 8\]"):
        export(nn.Sequential(nn.Conv2d(3, 4, 3), nn.Conv2d(5, 2, 1)), x, tmp_path / "m.onnx")
    with pytest.raises(InvalidArgumentError, match="'0'.*does not divide"):
        export(nn.Sequential(nn.AdaptiveAvgPool2d(3)), x, tmp_path / "m.onnx")
    with pytest.raises(InvalidArgumentError, match="running statistics"):
        export(nn.Sequential(nn.BatchNorm2d(3, track_running_stats=False)), x, tmp_path / "m.onnx")
    with pytest.raises(InvalidArgumentError, match="dynamic_batch=False"):
        export(nn.Flatten(0), x, tmp_path / "m.onnx")
    assert not list(tmp_path.iterdir())


# ----- what the exporter lowers, and what it does not know -------------------------------------
class Doubler(nn.Module):
    def forward(self, x):
        return x * 2


class ScaledConv(nn.Conv2d):
    def forward(self, x):
        return super().forward(x) * 0.5


class _Cube(ex.autograd.Function):
    def forward(self, x):
        return x ** 3

    def backward(self, g):
        raise NotImplementedError


class Cuber(nn.Module):
    def forward(self, x):
        return _Cube.apply(x)


def test_custom_modules_export_through_the_ops_they_run(tmp_path):
    """The exporter lowers the captured ops, so a module's own forward (or a subclass's) needs nothing."""
    x = np.random.default_rng(11).standard_normal((2, 3, 6, 6)).astype(np.float32)
    for model in (nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sequential(nn.ReLU(), Doubler())),
                  nn.Sequential(ScaledConv(3, 4, 1)), Doubler()):
        export(model.eval(), x[:1], tmp_path / "m.onnx")
        assert relative_error(OnnxModel(tmp_path / "m.onnx")(x), excite_eval(model, x)) < 1e-5


def test_an_unknown_function_is_named_with_its_module(tmp_path):
    path = tmp_path / "m.onnx"
    path.write_bytes(b"previous file")
    model = nn.Sequential(nn.Conv2d(3, 4, 3), nn.Sequential(nn.ReLU(), Cuber()))
    with pytest.raises(InvalidArgumentError, match=r"node '1\.1\._cube' \(in '1\.1'\).*no lowering for the Function _Cube.*"
                                                   r"register_op\(_Cube\)"):
        export(model, np.zeros((1, 3, 8, 8), np.float32), path)
    # a failed export leaves an existing file alone and no temporary file behind
    assert path.read_bytes() == b"previous file"
    assert [p.name for p in tmp_path.iterdir()] == ["m.onnx"]


def test_register_op_for_a_custom_function(tmp_path):
    @register_op(_Cube)
    def _cube(ctx, node, args):
        three = ctx.constant(node.name + ".three", np.float32(3.0))
        return ctx.node("Pow", [ctx.name(node.inputs[0]), three], node)

    model = nn.Sequential(nn.Conv2d(3, 2, 1), Cuber()).eval()
    x = np.random.default_rng(9).standard_normal((2, 3, 4, 4)).astype(np.float32)
    export(model, x[:1], tmp_path / "m.onnx")
    assert relative_error(OnnxModel(tmp_path / "m.onnx")(x), excite_eval(model, x)) < 1e-5


# ----- the runtime wrapper --------------------------------------------------------------------
def test_onnx_model_inputs_and_errors(tmp_path):
    model = nn.Sequential(nn.Conv2d(3, 2, 1), nn.Flatten()).eval()
    x = np.random.default_rng(10).standard_normal((2, 3, 4, 4))
    export(model, x[:1], tmp_path / "m.onnx")
    runner = load_onnx(tmp_path / "m.onnx", num_threads=1)
    assert runner.input_name == "input" and runner.input_shape == (None, 3, 4, 4)
    assert "num_threads=1" in repr(runner)
    expected = excite_eval(model, x.astype(np.float32))
    assert relative_error(runner(x), expected) < 1e-5  # float64 in, cast to float32
    assert relative_error(runner(ex.tensor(x.astype(np.float32))), expected) < 1e-5
    with pytest.raises(ShapeError, match=r"\[N, 3, 4, 4\].*\[2, 3, 5, 4\]"):
        runner(np.zeros((2, 3, 5, 4), np.float32))
    with pytest.raises(InvalidArgumentError, match="num_threads"):
        OnnxModel(tmp_path / "m.onnx", num_threads=0)
    with pytest.raises(FileNotFoundError):
        OnnxModel(tmp_path / "missing.onnx")
    (tmp_path / "bad.onnx").write_bytes(b"not a protobuf at all")
    with pytest.raises(CheckpointError, match="bad.onnx"):
        OnnxModel(tmp_path / "bad.onnx")


def test_missing_optional_packages_explain_the_extra(tmp_path, monkeypatch):
    x = np.zeros((1, 3, 4, 4), np.float32)
    export(nn.ReLU(), x, tmp_path / "m.onnx")
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # makes `import onnxruntime` fail
    with pytest.raises(ImportError, match=r"excite\[onnx\]"):
        OnnxModel(tmp_path / "m.onnx")
    monkeypatch.setitem(sys.modules, "onnx", None)
    with pytest.raises(ImportError, match=r"excite\[onnx\]"):
        export(nn.ReLU(), x, tmp_path / "m2.onnx")
