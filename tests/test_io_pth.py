"""PyTorch .pth round trips against real torch: torch.save -> ex.load and ex.save -> torch.load, bit-exact.

Budget: ~6 s (two small torchvision state_dicts, every dtype and layout, both pth formats).
"""
import collections
import io
import os
import subprocess
import sys
import time
import zipfile

import numpy as np
import pytest

import excite as ex
from excite.io import _dtypes, _files
from excite.tensor import Tensor

FORMATS = ["zip", "legacy"]
DTYPE_NAMES = ["float16", "bfloat16", "float32", "float64", "int8", "int16", "int32", "int64", "uint8", "bool",
               "complex64"]


def torch_save(torch, obj, fmt, path=None):
    target = path if path is not None else io.BytesIO()
    torch.save(obj, target, _use_new_zipfile_serialization=(fmt == "zip"))
    if path is None:
        target.seek(0)
    return target


def torch_load_bytes(torch, data):
    return torch.load(io.BytesIO(data), weights_only=True)


def ex_save_bytes(obj, fmt="zip"):
    buffer = io.BytesIO()
    ex.save(obj, buffer, _use_new_zipfile_serialization=(fmt == "zip"))
    return buffer.getvalue()


def torch_bits(torch, t):
    """The raw element bits of a torch tensor as a NumPy array (bfloat16 included)."""
    t = t.detach().contiguous()
    if t.dtype == torch.bfloat16:
        return t.view(torch.int16).numpy().view(np.uint16)
    return t.numpy()


def same_bits(a, b):
    a, b = np.asarray(a), np.asarray(b)
    if a.dtype != b.dtype or a.shape != b.shape:
        return False
    return a.tobytes() == b.tobytes() if a.size else True


def same_widened(ours, widened_by_torch):
    """Widened half values: bit-exact, except that a NaN's payload after widening is torch's own choice."""
    ours, theirs = np.asarray(ours), np.asarray(widened_by_torch)
    nan = np.isnan(theirs)
    return ours.dtype == theirs.dtype and np.array_equal(np.isnan(ours), nan) and \
        ours[~nan].tobytes() == theirs[~nan].tobytes()


def sample_tensor(torch, name, shape=(3, 4)):
    dtype = getattr(torch, name)
    g = torch.Generator().manual_seed(7)
    if name == "bool":
        return torch.rand(shape, generator=g) > 0.5
    if dtype.is_floating_point or dtype.is_complex:
        t = (torch.randn(shape, generator=g) * 100).to(dtype)
        flat = t.view(-1)
        if not dtype.is_complex:  # special values must survive the trip too
            flat[:4] = torch.tensor([float("nan"), float("inf"), -float("inf"), -0.0]).to(dtype)
        return t
    info = torch.iinfo(dtype)
    t = torch.randint(info.min, info.max, shape, generator=g, dtype=torch.int64).to(dtype)
    t.view(-1)[:2] = torch.tensor([info.min, info.max]).to(dtype)
    return t


# ===== torch.save -> ex.load ============================================================
@pytest.mark.parametrize("fmt", FORMATS)
def test_every_dtype_loads_bit_exact(torch, fmt):
    tensors = {name: sample_tensor(torch, name) for name in DTYPE_NAMES}
    loaded = ex.load(torch_save(torch, tensors, fmt))
    for name, t in tensors.items():
        got = loaded[name]
        assert isinstance(got, Tensor), name
        if name in ("float16", "bfloat16"):  # widened to float32, which is exact
            assert got.dtype == np.float32
            assert same_widened(got.data, t.float().numpy()), name
        else:
            assert same_bits(got.data, torch_bits(torch, t)), name


@pytest.mark.parametrize("fmt", FORMATS)
def test_keep_half_keeps_float16_and_bfloat16_bits(torch, fmt):
    ml_dtypes = pytest.importorskip("ml_dtypes")  # NumPy needs it to hold bfloat16 at all
    tensors = {"h": sample_tensor(torch, "float16"), "bf": sample_tensor(torch, "bfloat16")}
    loaded = ex.load(torch_save(torch, tensors, fmt), keep_half=True)
    assert loaded["h"].dtype == np.float16 and same_bits(loaded["h"].data, torch_bits(torch, tensors["h"]))
    assert loaded["bf"].dtype == ml_dtypes.bfloat16
    assert same_bits(loaded["bf"].data.view(np.uint16), torch_bits(torch, tensors["bf"]))


@pytest.mark.parametrize("fmt", FORMATS)
def test_layouts_load_with_torch_strides_and_sharing(torch, fmt):
    base = torch.arange(60, dtype=torch.float32).reshape(3, 4, 5)
    obj = collections.OrderedDict(
        base=base,
        transposed=base[0].t(),                                  # non-contiguous
        permuted=base.permute(2, 0, 1),
        expanded=torch.arange(4.0).reshape(4, 1).expand(4, 6),   # stride 0
        offset_slice=base[1, 1:, 2:],                            # storage_offset
        scalar=torch.tensor(3.5),                                # 0-d
        empty=torch.empty(0, 7),
        empty_view=base[:, :0],
    )
    obj["same_again"] = obj["base"]                              # one tensor twice
    loaded = ex.load(torch_save(torch, obj, fmt))
    for key, t in obj.items():
        got = loaded[key]
        assert got.shape == tuple(t.shape), key
        assert np.array_equal(got.data, t.numpy()), key
        if t.numel():
            assert tuple(s // got.data.itemsize for s in got.data.strides) == t.stride(), key
    assert loaded["same_again"] is loaded["base"]
    # views of one storage share memory, as they do in torch
    loaded["base"].data[1, 1, 2] = -1.0
    assert loaded["offset_slice"].data[0, 0] == -1.0
    assert loaded["permuted"].data[2, 1, 1] == -1.0


@pytest.mark.parametrize("fmt", FORMATS)
def test_nested_training_checkpoint(torch, fmt):
    weights = torch.randn(2, 3)
    state = collections.OrderedDict(w=weights, b=torch.zeros(2))
    state._metadata = {"": {"version": 1}, "layer": {"version": 2}}
    checkpoint = {
        "epoch": 7, "lr": 0.125, "name": "run-α", "done": False, "nothing": None, "big": 2**70, "neg": -3,
        "history": [1.5, 2.5, (3, "x", None)], "shape": torch.Size([2, 3]), "blob": b"\x00\xffab",
        "tags": {"a", "b"}, "dtype": torch.float16, "model": state,
        "optimizer": {"state": {0: {"momentum": weights * 2}},
                                                       "param_groups": [{"lr": 0.1, "params": [0, 1]}]},
    }
    loaded = ex.load(torch_save(torch, checkpoint, fmt))
    assert {k: v for k, v in loaded.items() if k not in ("model", "optimizer")} == {
        "epoch": 7, "lr": 0.125, "name": "run-α", "done": False, "nothing": None, "big": 2**70, "neg": -3,
        "history": [1.5, 2.5, (3, "x", None)], "shape": (2, 3), "blob": b"\x00\xffab", "tags": {"a", "b"},
        "dtype": "torch.float16"}
    assert torch_load_bytes(torch, ex_save_bytes({"dtype": loaded["dtype"]}))["dtype"] is torch.float16
    assert type(loaded["shape"]) is tuple
    assert type(loaded["model"]) is collections.OrderedDict and list(loaded["model"]) == ["w", "b"]
    assert loaded["model"]._metadata == state._metadata
    assert np.array_equal(loaded["optimizer"]["state"][0]["momentum"].data, (weights * 2).numpy())
    assert loaded["optimizer"]["param_groups"] == [{"lr": 0.1, "params": [0, 1]}]


def test_parameters_load_with_requires_grad(torch):
    param = torch.nn.Parameter(torch.randn(3))
    loaded = ex.load(torch_save(torch, {"p": param, "t": torch.randn(2)}, "zip"))
    assert loaded["p"].requires_grad and not loaded["t"].requires_grad
    assert np.array_equal(loaded["p"].data, param.detach().numpy())


@pytest.mark.parametrize("arch", ["mobilenet_v3_small", "efficientnet_b0"])
def test_torchvision_state_dicts_load_bit_exact(torch, torchvision, arch, tmp_path):
    torch.manual_seed(0)
    state = getattr(torchvision.models, arch)().state_dict()
    path = tmp_path / f"{arch}.pth"
    torch.save(state, path)
    loaded = ex.load(path)
    assert list(loaded) == list(state)
    for key, t in state.items():
        assert same_bits(loaded[key].data, t.numpy()), key
    # and back: torch (weights_only) and torchvision's strict load_state_dict take excite's file
    ex.save(loaded, tmp_path / "back.pth")
    back = torch.load(tmp_path / "back.pth", weights_only=True)
    getattr(torchvision.models, arch)().load_state_dict(back)
    for key, t in state.items():
        assert torch.equal(back[key], t), key
    assert back._metadata == state._metadata


# ===== ex.save -> torch.load ============================================================
def test_excite_model_state_dict_loads_into_torchvision(torch, torchvision, tmp_path):
    from excite.vision import models

    ours = models.mobilenet_v3_small()
    ex.save(ours.state_dict(), tmp_path / "ours.pth")
    reference = torchvision.models.mobilenet_v3_small()
    reference.load_state_dict(torch.load(tmp_path / "ours.pth", weights_only=True))  # strict
    for key, value in ours.state_dict().items():
        assert same_bits(reference.state_dict()[key].numpy(), value.data), key


def test_checkpoint_without_num_batches_tracked_loads_into_an_excite_model(torch, torchvision, tmp_path):
    from excite.vision import models

    state = torchvision.models.mobilenet_v3_small().state_dict()
    old_style = collections.OrderedDict((k, v) for k, v in state.items() if not k.endswith("num_batches_tracked"))
    torch.save(old_style, tmp_path / "old.pth")
    ours = models.mobilenet_v3_small()
    ours.load_state_dict(ex.load(tmp_path / "old.pth"))
    for key, value in old_style.items():
        assert same_bits(ours.state_dict()[key].data, value.numpy()), key


@pytest.mark.parametrize("fmt", FORMATS)
def test_every_dtype_saved_by_excite_loads_in_torch(torch, fmt):
    rng = np.random.default_rng(0)
    arrays = {
        "float16": rng.standard_normal((3, 4)).astype(np.float16),
        "float32": rng.standard_normal((3, 4)).astype(np.float32),
        "float64": rng.standard_normal((3, 4)),
        "int8": rng.integers(-128, 128, (5,), dtype=np.int8),
        "int16": rng.integers(-2**15, 2**15, (5,), dtype=np.int16),
        "int32": rng.integers(-2**31, 2**31, (5,), dtype=np.int32),
        "int64": rng.integers(-2**63, 2**63, (5,), dtype=np.int64),
        "uint8": rng.integers(0, 256, (5,), dtype=np.uint8),
        "bool": rng.random(5) > 0.5,
        "complex64": (rng.standard_normal(3) + 1j * rng.standard_normal(3)).astype(np.complex64),
        "big_endian": np.arange(4, dtype=">f4"),
    }
    arrays["float32"][0, :3] = [np.nan, np.inf, -0.0]
    back = torch_load_bytes(torch, ex_save_bytes({k: ex.from_numpy(v) for k, v in arrays.items()}, fmt))
    for name, array in arrays.items():
        expected = array.astype(array.dtype.newbyteorder("<"))
        assert str(back[name].dtype) == f"torch.{expected.dtype.name}", name
        assert same_bits(back[name].numpy(), expected), name


def test_uint16_saved_by_excite_loads_in_torch(torch):
    array = np.array([0, 1, 65535], dtype=np.uint16)
    back = torch_load_bytes(torch, ex_save_bytes({"u": ex.from_numpy(array)}))
    assert back["u"].dtype == torch.uint16 and back["u"].view(torch.int16).numpy().view(np.uint16).tolist() == [0, 1, 65535]


@pytest.mark.parametrize("fmt", FORMATS)
def test_views_saved_by_excite_keep_strides_and_sharing(torch, fmt):
    base = np.arange(60, dtype=np.float32).reshape(3, 4, 5)
    obj = {
        "base": ex.from_numpy(base),
        "transposed": ex.from_numpy(base[0].T),
        "offset_slice": ex.from_numpy(base[1, 1:, 2:]),
        "expanded": ex.from_numpy(np.broadcast_to(np.arange(4.0, dtype=np.float32)[:, None], (4, 6))),
        "reversed": ex.from_numpy(base[0, ::-1]),  # negative strides: torch has none, saved as a copy
        "scalar": ex.tensor(2.5),
        "empty": ex.zeros(0, 3),
    }
    back = torch_load_bytes(torch, ex_save_bytes(obj, fmt))
    for key, t in obj.items():
        assert np.array_equal(back[key].numpy(), t.data), key
    assert back["transposed"].stride() == (1, 5)
    assert back["expanded"].stride() == (1, 0)
    assert back["offset_slice"].storage_offset() == 27
    pointer = back["base"].untyped_storage().data_ptr()
    assert back["transposed"].untyped_storage().data_ptr() == pointer
    assert back["offset_slice"].untyped_storage().data_ptr() == pointer


def test_nested_checkpoint_saved_by_excite_loads_in_torch(torch):
    state = collections.OrderedDict(w=ex.randn(2, 3))
    state._metadata = {"": {"version": 1}}
    checkpoint = {"model": state, "epoch": 3, "lr": 1e-3, "name": "x", "flags": (True, None), "blob": b"\x01",
                  "big": -2**80, "tags": {1, 2}, "nested": [[1, [2.5]], {"k": ex.ones(2, dtype=ex.int64)}]}
    back = torch_load_bytes(torch, ex_save_bytes(checkpoint))
    assert back["epoch"] == 3 and back["lr"] == 1e-3 and back["name"] == "x" and back["flags"] == (True, None)
    assert back["blob"] == b"\x01" and back["big"] == -2**80 and back["tags"] == {1, 2}
    assert back["nested"][0] == [1, [2.5]] and back["nested"][1]["k"].tolist() == [1, 1]
    assert type(back["model"]) is collections.OrderedDict and back["model"]._metadata == {"": {"version": 1}}
    assert np.array_equal(back["model"]["w"].numpy(), state["w"].data)


def test_zip_layout_matches_torch(torch, tmp_path):
    state = collections.OrderedDict(a=torch.randn(3), b=torch.arange(5))
    torch.save(state, tmp_path / "model.v1.pth")
    ex.save(ex.load(tmp_path / "model.v1.pth"), tmp_path / "ours.v1.pth")
    theirs = zipfile.ZipFile(tmp_path / "model.v1.pth")
    ours = zipfile.ZipFile(tmp_path / "ours.v1.pth")
    assert [n.replace("model.v1/", "") for n in theirs.namelist()] == \
        [n.replace("ours.v1/", "") for n in ours.namelist()]
    for name in ("version", ".format_version", ".storage_alignment", "byteorder"):
        assert ours.read(f"ours.v1/{name}") == theirs.read(f"model.v1/{name}")
    raw = (tmp_path / "ours.v1.pth").read_bytes()
    for info in ours.infolist():  # records start 64-byte aligned, as torch's writer aligns them
        header = raw[info.header_offset:info.header_offset + 30]
        start = info.header_offset + 30 + int.from_bytes(header[26:28], "little") + \
            int.from_bytes(header[28:30], "little")
        assert start % 64 == 0, info.filename


def test_legacy_file_converts_to_zip(torch, tmp_path):
    state = {"w": sample_tensor(torch, "bfloat16"), "i": torch.arange(3)}
    torch_save(torch, state, "legacy", tmp_path / "old.pth")
    ex.io.convert(tmp_path / "old.pth", tmp_path / "new.pth")
    assert zipfile.is_zipfile(tmp_path / "new.pth")
    back = torch.load(tmp_path / "new.pth", weights_only=True)
    assert back["w"].dtype == torch.bfloat16 and torch.equal(back["w"].view(torch.int16), state["w"].view(torch.int16))
    assert torch.equal(back["i"], state["i"])


def test_load_accepts_paths_and_file_objects(torch, tmp_path):
    torch.save({"a": torch.ones(2)}, tmp_path / "a.pth")
    with open(tmp_path / "a.pth", "rb") as f:
        assert ex.load(f)["a"].tolist() == [1.0, 1.0]
    assert ex.load(str(tmp_path / "a.pth"))["a"].tolist() == [1.0, 1.0]
    assert ex.load(tmp_path / "a.pth", map_location="cpu")["a"].tolist() == [1.0, 1.0]


def test_load_refuses_weights_only_false_and_devices(tmp_path):
    ex.save({"a": ex.ones(1)}, tmp_path / "a.pth")
    with pytest.raises(ex.InvalidArgumentError, match="weights_only"):
        ex.load(tmp_path / "a.pth", weights_only=False)
    with pytest.raises(ex.InvalidArgumentError, match="map_location"):
        ex.load(tmp_path / "a.pth", map_location="cuda:0")


def test_save_rejects_unsupported_objects_naming_the_path():
    with pytest.raises(ex.InvalidArgumentError, match=r"obj\['model'\]\['f'\].*function"):
        ex.save({"model": {"f": print}}, io.BytesIO())


# ===== atomic writes ======================================================================
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_interrupted_save_leaves_the_old_file_intact(monkeypatch, tmp_path, suffix):
    path = tmp_path / f"model{suffix}"
    ex.save({"w": ex.ones(1000)}, path)
    good = path.read_bytes()

    class Interrupted(Exception):
        pass

    if suffix == ".pth":
        import excite.io.pth as pth

        real = pth._storage_bytes
        calls = []

        def failing(array):  # the pickle and one storage are already written when this strikes
            calls.append(array)
            if len(calls) == 2:
                raise Interrupted
            return real(array)

        monkeypatch.setattr(pth, "_storage_bytes", failing)
    else:
        import excite.io.safetensors_io as st

        def failing(specs, filename, metadata=None):
            with open(filename, "wb") as f:
                f.write(b"\x08\x00\x00\x00\x00\x00\x00\x00{")  # a few bytes, then the crash
            raise Interrupted

        monkeypatch.setattr(st.safetensors, "serialize_file", failing)
    with pytest.raises(Interrupted):
        ex.save({"w": ex.zeros(1000), "v": ex.zeros(5)}, path)
    assert path.read_bytes() == good
    assert os.listdir(tmp_path) == [path.name]  # no temporary file left behind
    assert ex.load(path)["w"].tolist() == [1.0] * 1000


SAVE_THAT_HANGS_MID_WRITE = """
import sys, time
import excite as ex
import excite.io.pth as pth
real = pth._storage_bytes
def stall(array):
    print("writing", flush=True)
    time.sleep(120)
    return real(array)
pth._storage_bytes = stall
ex.save({"w": ex.ones(3)}, sys.argv[1])
"""


def temporaries(directory):
    return sorted(name for name in os.listdir(directory) if name.endswith(".tmp"))


def test_next_save_removes_the_temporary_of_a_killed_save_but_not_of_a_live_one(tmp_path):
    path = tmp_path / "model.pth"
    writer = subprocess.Popen([sys.executable, "-c", SAVE_THAT_HANGS_MID_WRITE, str(path)], stdout=subprocess.PIPE,
                              text=True)
    try:
        assert writer.stdout.readline() == "writing\n"
        (left,) = temporaries(tmp_path)
        assert left.startswith(f".model.pth.{_files._host_tag()}-{writer.pid}.")
        ex.save({"w": ex.zeros(2)}, path)  # the other save is alive: its temporary stays
        assert temporaries(tmp_path) == [left]
    finally:
        writer.kill()  # our own child, by its handle
        writer.wait(timeout=60)
    assert temporaries(tmp_path) == [left]  # killed mid-write: nothing cleaned up after it
    ex.save({"w": ex.ones(2)}, path)
    assert temporaries(tmp_path) == [] and ex.load(path)["w"].tolist() == [1.0, 1.0]


def test_temporaries_of_other_hosts_files_and_old_names_are_removed_only_when_stale(tmp_path):
    old = time.time() - _files.STALE_SECONDS - 60
    cases = {  # name -> (modification time, removed by the next save of model.pth)
        ".model.pth.00000000-1.0123456789ab.tmp": (time.time(), False),   # another host's writer, live
        ".model.pth.00000000-2.0123456789ab.tmp": (old, True),           # another host's, abandoned
        ".model.pth.0123456789ab.tmp": (time.time(), False),              # named before owners were recorded
        ".model.pth.ba9876543210.tmp": (old, True),
        ".model.pth.bak.0123456789ab.tmp": (old, False),                  # the temporary of another file
        ".model.pth.x.tmp": (old, False),                                 # not a name excite makes
    }
    if _files._host_tag() == "00000000":
        pytest.skip("this host's tag is the one these names use for another host")
    for name, (mtime, _) in cases.items():
        (tmp_path / name).write_bytes(b"partial")
        os.utime(tmp_path / name, (mtime, mtime))
    ex.save({"w": ex.ones(1)}, tmp_path / "model.pth")
    assert temporaries(tmp_path) == sorted(name for name, (_, removed) in cases.items() if not removed)


def test_save_respects_umask(tmp_path):
    old = os.umask(0o027)
    try:
        ex.save({"w": ex.ones(1)}, tmp_path / "m.pth")
    finally:
        os.umask(old)
    assert (tmp_path / "m.pth").stat().st_mode & 0o777 == 0o640


def test_dtype_table_covers_what_the_writer_accepts():
    for element_type in _dtypes.ELEMENT_TYPES:
        assert _dtypes.element_type_of(element_type.numpy_dtype) is element_type
