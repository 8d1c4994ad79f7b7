"""safetensors both ways against torch + the safetensors package, and .pth <-> .safetensors conversion.

Budget: ~2 s.
"""
import collections

import numpy as np
import pytest

import excite as ex

DTYPES = ["float16", "bfloat16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool"]


def sample(torch, name):
    dtype = getattr(torch, name)
    g = torch.Generator().manual_seed(3)
    if name == "bool":
        return torch.rand(2, 3, generator=g) > 0.5
    if dtype.is_floating_point:
        t = (torch.randn(2, 3, generator=g) * 50).to(dtype)
        t.view(-1)[:3] = torch.tensor([float("nan"), float("-inf"), -0.0]).to(dtype)
        return t
    info = torch.iinfo(dtype)
    return torch.randint(info.min, info.max, (2, 3), generator=g, dtype=torch.int64).to(dtype)


def bits(torch, t):
    return t.view(torch.int16).numpy() if t.dtype == torch.bfloat16 else t.numpy()


def test_torch_safetensors_load_bit_exact(torch, tmp_path):
    from safetensors.torch import save_file

    tensors = {name: sample(torch, name) for name in DTYPES}
    save_file(tensors, tmp_path / "m.safetensors")
    loaded = ex.load(tmp_path / "m.safetensors")
    assert isinstance(loaded, collections.OrderedDict) and set(loaded) == set(tensors)
    for name, t in tensors.items():
        expected = t.float().numpy() if name in ("float16", "bfloat16") else t.numpy()
        assert loaded[name].dtype == expected.dtype, name
        nan = np.isnan(expected) if expected.dtype.kind == "f" else np.zeros(expected.shape, bool)
        assert np.array_equal(np.isnan(loaded[name].data) if nan.any() else nan, nan), name
        # bit-exact apart from NaN payloads, which torch's own float16 widening does not preserve
        assert loaded[name].data[~nan].tobytes() == expected[~nan].tobytes(), name


def test_format_is_detected_from_bytes_not_suffix(torch, tmp_path):
    from safetensors.torch import save_file

    save_file({"a": torch.arange(4.0)}, tmp_path / "misnamed.pth")
    assert ex.load(tmp_path / "misnamed.pth")["a"].tolist() == [0.0, 1.0, 2.0, 3.0]
    torch.save({"a": torch.arange(2.0)}, tmp_path / "misnamed.safetensors")
    assert ex.load(tmp_path / "misnamed.safetensors")["a"].tolist() == [0.0, 1.0]


def test_excite_safetensors_load_in_torch_bit_exact(torch, tmp_path):
    from safetensors.torch import load_file

    rng = np.random.default_rng(1)
    arrays = {"f32": rng.standard_normal((3, 2)).astype(np.float32), "f16": rng.standard_normal(4).astype(np.float16),
              "f64": rng.standard_normal(2), "i64": np.arange(-3, 3), "u8": np.arange(5, dtype=np.uint8),
              "b": np.array([True, False]), "scalar": np.array(1.5, dtype=np.float32),
              "view": np.arange(12, dtype=np.float32).reshape(3, 4).T, "empty": np.zeros((0, 2), np.float32)}
    ex.save({k: ex.from_numpy(v) for k, v in arrays.items()}, tmp_path / "m.safetensors")
    back = load_file(tmp_path / "m.safetensors")
    for name, array in arrays.items():
        assert back[name].numpy().dtype == array.dtype and back[name].shape == array.shape, name
        assert np.array_equal(back[name].numpy(), array), name


def test_convert_pth_to_safetensors_and_back_keeps_every_dtype(torch, tmp_path):
    from safetensors.torch import load_file

    tensors = {name: sample(torch, name) for name in DTYPES}
    tensors["strided"] = torch.arange(12.0).reshape(3, 4).t()
    state = collections.OrderedDict(tensors)
    state._metadata = {"": {"version": 1}}
    torch.save(state, tmp_path / "m.pth")
    ex.io.convert(tmp_path / "m.pth", tmp_path / "m.safetensors")
    via_safetensors = load_file(tmp_path / "m.safetensors")
    ex.io.convert(tmp_path / "m.safetensors", tmp_path / "again.pth")
    via_pth = torch.load(tmp_path / "again.pth", weights_only=True)
    for name, t in tensors.items():
        for back in (via_safetensors[name], via_pth[name]):
            assert back.dtype == t.dtype, name
            assert np.array_equal(bits(torch, back.contiguous()), bits(torch, t.contiguous()), equal_nan=True), name


def test_safetensors_refuses_nested_objects(tmp_path):
    with pytest.raises(ex.InvalidArgumentError, match="'meta' is a dict"):
        ex.save({"w": ex.ones(2), "meta": {"epoch": 1}}, tmp_path / "m.safetensors")
    with pytest.raises(ex.InvalidArgumentError, match="names must be strings"):
        ex.save({1: ex.ones(2)}, tmp_path / "m.safetensors")
    assert not (tmp_path / "m.safetensors").exists()
