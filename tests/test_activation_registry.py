"""The activation registry: every activation is one record; a new one (mish) added by one record gets its
module, functional, autograd and ONNX export, and matches torch; bad records are refused."""
import numpy as np
import pytest

import excite as ex
import excite.nn as nn
import excite.nn.functional as F
from excite.errors import InvalidArgumentError
from excite.kernels import activations
from oracle import check_op

MISH = activations.Activation(
    name="mish", module="Mish",
    forward="x * tanh(log1p(exp(x)))",
    # d/dx x * tanh(sp(x)) = tanh(sp) + x * sigmoid(x) * (1 - tanh(sp)^2)
    derivative="tanh(log1p(exp(x))) + x * sigmoid(x) * (1 - tanh(log1p(exp(x))) * tanh(log1p(exp(x))))",
    onnx=lambda emit, x, constant: emit("Mul", x, emit("Tanh", emit("Softplus", x))),
    doc="x * tanh(softplus(x))")


@pytest.fixture(scope="module")
def mish():
    """nn.Mish, registered once for this module (registration is process-wide and cannot be undone)."""
    if not hasattr(nn, "Mish"):
        nn.register_activation(MISH)
    return nn.Mish


def test_builtin_modules_functionals_and_codes_come_from_the_records():
    for record in activations.builtin_records():
        assert getattr(F, record.name).__name__ == record.name
        module = getattr(nn, record.module)()
        assert nn.activation.module_record(module) is record
        assert activations.code(record.name) == record.code and record.builtin
    assert activations.code(None) == activations.IDENTITY
    assert repr(nn.ReLU6(inplace=True)) == "ReLU6(inplace=True)" and nn.ReLU6.max_val == 6.0
    assert repr(nn.Hardswish(inplace=True)) == "Hardswish()" and repr(nn.Sigmoid()) == "Sigmoid()"


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape", [(3, 7), (4, 16, 24, 24)], ids=["small", "large"])
def test_a_registered_activation_matches_torch_forward_and_backward(torch, mish, shape, dtype):
    x = np.random.default_rng(0).uniform(-8, 8, shape)
    check_op(torch, lambda t: F.mish(t), torch.nn.functional.mish, [x], dtype=dtype, atol=1e-6 if dtype == np.float32 else None)
    check_op(torch, lambda t: mish()(t), torch.nn.Mish(), [x], dtype=dtype, atol=1e-6 if dtype == np.float32 else None)


def test_a_registered_activation_passes_gradcheck(mish):
    x = ex.tensor(np.random.default_rng(1).uniform(-4, 4, (2, 5)), dtype=ex.float64, requires_grad=True)
    assert ex.autograd.gradcheck(lambda t: F.mish(t), (x,))


def test_a_registered_activation_runs_inside_fused_layers(torch, mish):
    """The compiled kernels do not hold it: convolution and batch norm epilogues apply it afterwards."""
    rng = np.random.default_rng(2)
    block = nn.Conv2dNormActivation(8, 16, kernel_size=1, activation_layer=nn.Mish).eval()
    tblock = torch.nn.Sequential(torch.nn.Conv2d(8, 16, 1, bias=False), torch.nn.BatchNorm2d(16),
                                 torch.nn.Mish()).eval()
    for (_, p), (_, tp) in zip(block.state_dict().items(), tblock.state_dict().items()):
        values = rng.uniform(0.5, 1.5, p.shape) if p.data.dtype.kind == "f" else p.numpy()
        p.data[...] = values
        tp.copy_(torch.tensor(np.asarray(values)))
    x = rng.standard_normal((2, 8, 9, 9)).astype(np.float32)
    with ex.no_grad():
        out = block(ex.tensor(x)).numpy()
    np.testing.assert_allclose(out, tblock(torch.tensor(x)).detach().numpy(), rtol=1e-5, atol=1e-5)
    se = nn.SqueezeExcitation(16, 4, activation=nn.Mish)
    y = ex.tensor(rng.standard_normal((2, 16, 5, 5)).astype(np.float32), requires_grad=True)
    se(y).sum().backward()
    assert y.grad is not None and np.isfinite(y.grad.numpy()).all()


def test_a_registered_activation_exports_to_onnx(mish, tmp_path):
    ort = pytest.importorskip("onnxruntime")
    from excite.onnx import export

    model = nn.Sequential(nn.Conv2d(3, 4, 3, padding=1), nn.Mish()).eval()
    x = ex.randn(1, 3, 6, 6)
    path = tmp_path / "mish.onnx"
    export(model, x, str(path))
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    (out,) = session.run(None, {session.get_inputs()[0].name: x.numpy()})
    with ex.no_grad():
        np.testing.assert_allclose(out, model(x).numpy(), rtol=1e-4, atol=1e-5)


@pytest.mark.parametrize("change, message", [
    (dict(forward="x * os.system(1)"), "may only use numbers"),
    (dict(forward="x * open(1)"), "uses 'open'"),
    (dict(forward="x.real"), "may only use numbers"),
    (dict(forward="x +"), "not a Python expression"),
    (dict(derivative="y * 2"), "uses 'y'"),
    (dict(name="relu"), "already registered"),
    (dict(module="ReLU"), "already registered"),
])
def test_bad_records_are_refused_with_the_reason(change, message):
    from dataclasses import replace

    record = replace(MISH, **{"name": "mish_bad", "module": "MishBad", **change})
    with pytest.raises(InvalidArgumentError, match=message):
        activations.register(record)
    assert not {"mish_bad", "MishBad"} & {n for r in activations.records() for n in (r.name, r.module)}


def test_unknown_activation_names_list_the_registered_ones():
    with pytest.raises(InvalidArgumentError, match="unknown activation 'swish2'; registered: relu"):
        activations.get("swish2")
