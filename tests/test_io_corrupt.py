"""Corrupt, truncated and fuzzed checkpoints: only CheckpointError (with a message saying what is wrong) escapes.

Budget: ~8 s (the hypothesis fuzz runs a bounded number of examples per format).
"""
import collections
import io
import json
import os
import pickle
import struct
import zipfile

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import excite as ex
from excite.tensor import Tensor
from test_io_hostile import (EMPTY_TUPLE, FALSE, PROTO2, REDUCE, STOP, as_legacy, as_zip, glob, integer, text, tup,
                             tensor_ops)

FLOATS_2 = struct.pack("<2f", 1.0, 2.0)


def load_bytes(blob):
    return ex.load(io.BytesIO(blob))


# ===== structural problems, each with the message that names it ==========================
STRUCTURAL = {
    "storage smaller than the tensor's extent": (
        as_zip(PROTO2 + tensor_ops(numel=2, size=(3,)) + STOP, [("data/0", FLOATS_2)]), "reaches element 2"),
    "strided extent beyond the storage": (
        as_zip(PROTO2 + tensor_ops(numel=2, size=(2, 2), stride=(1, 1), offset=1) + STOP, [("data/0", FLOATS_2)]),
        "reaches element 3"),
    "record size disagrees with the storage": (
        as_zip(PROTO2 + tensor_ops(numel=4, size=(2,)) + STOP, [("data/0", FLOATS_2)]), "holds 8 bytes"),
    "negative size": (as_zip(PROTO2 + tensor_ops(size=(-1,)) + STOP, [("data/0", FLOATS_2)]), "out of range"),
    "negative stride": (as_zip(PROTO2 + tensor_ops(stride=(-1,)) + STOP, [("data/0", FLOATS_2)]), "out of range"),
    "negative storage offset": (as_zip(PROTO2 + tensor_ops(offset=-1) + STOP, [("data/0", FLOATS_2)]), "out of range"),
    "overflowing size": (
        as_zip(PROTO2 + tensor_ops(size=(2**70,)) + STOP, [("data/0", FLOATS_2)]), "out of range"),
    "absurd element count of a stride-0 view": (
        as_zip(PROTO2 + tensor_ops(size=(2**30, 2**30), stride=(0, 0)) + STOP, [("data/0", FLOATS_2)]),
        "more than 2**48"),
    "size and stride of different lengths": (
        as_zip(PROTO2 + tensor_ops(size=(2, 1), stride=(1,)) + STOP, [("data/0", FLOATS_2)]), "differ in length"),
    "storage claiming petabytes (zip)": (
        as_zip(PROTO2 + tensor_ops(numel=2**47) + STOP, [("data/0", FLOATS_2)]), "holds 8 bytes"),
    "storage claiming petabytes (legacy)": (
        as_legacy(PROTO2 + tensor_ops(numel=2**47, legacy=True) + STOP, pickle.dumps(["0"], protocol=2)), "more than the file's"),
    "record header claiming more bytes than the archive holds": (
        (lambda z: z.replace(b"\x08\x00\x00\x00\x08\x00\x00\x00\x0e\x00", b"\x08\x00\x00\x00\x00\x00\x00\x40\x0e\x00"))(
            as_zip(PROTO2 + tensor_ops(numel=2**28) + STOP, [("data/0", FLOATS_2)])), "more than its 8 stored bytes"),
    "records outside a top folder": (
        (lambda b: (zipfile.ZipFile(b, "w").writestr("data.pkl", PROTO2 + b"N."), b.getvalue())[1])(io.BytesIO()),
        "not inside one top folder"),
    "unknown dtype": (as_zip(PROTO2 + tensor_ops(storage="QUInt8Storage") + STOP, [("data/0", FLOATS_2)]),
                      "torch.QUInt8Storage"),
    "wrong byteorder value": (
        as_zip(PROTO2 + tensor_ops() + STOP, [("data/0", FLOATS_2), ("byteorder", b"middle")]), "byteorder"),
    "missing storage record": (as_zip(PROTO2 + tensor_ops() + STOP), "has no record 'archive/data/0'"),
    "missing data.pkl": (
        (lambda b: (zipfile.ZipFile(b, "w").writestr("archive/version", "3\n"), b.getvalue())[1])(io.BytesIO()),
        "has no record 'archive/data.pkl'"),
    "one storage key with two types": (
        as_zip(PROTO2 + tup(tensor_ops(), tensor_ops(storage="IntStorage")) + STOP, [("data/0", FLOATS_2)]),
        "named twice"),
    "rebuild function with missing arguments": (
        as_zip(PROTO2 + glob("torch._utils", "_rebuild_tensor_v2") + tup(integer(1)) + REDUCE + STOP),
        "_rebuild_tensor_v2"),
    "tensor rebuilt from a non-storage": (
        as_zip(PROTO2 + glob("torch._utils", "_rebuild_tensor_v2") +
               tup(text("x"), integer(0), tup(), tup(), FALSE, glob("collections", "OrderedDict") + EMPTY_TUPLE +
                   REDUCE) + REDUCE + STOP), "rebuilt from a storage"),
    "pickle without STOP": (as_zip(PROTO2 + text("x")), "exhausted before seeing STOP"),
    "stack underflow": (as_zip(PROTO2 + b"t" + STOP), "stack underflow"),
    "legacy: storage id without its view field": (as_legacy(PROTO2 + tensor_ops() + STOP), "expected 6"),
    "legacy: wrong magic number": (pickle.dumps(12345, protocol=2) + b"\x00" * 40, "magic number 12345"),
    "legacy: storage size header disagrees": (
        as_legacy(PROTO2 + tensor_ops(legacy=True) + STOP, pickle.dumps(["0"], protocol=2) + struct.pack("<q", 3) + FLOATS_2),
        "holds 3 elements"),
    "legacy: storage data truncated": (
        as_legacy(PROTO2 + tensor_ops(legacy=True) + STOP, pickle.dumps(["0"], protocol=2) + struct.pack("<q", 2) + b"\x00"),
        "truncated"),
    "legacy: data for an unnamed storage": (
        as_legacy(PROTO2 + tensor_ops(legacy=True) + STOP, pickle.dumps(["7"], protocol=2)), "never names"),
    "legacy: storage data missing": (as_legacy(PROTO2 + tensor_ops(legacy=True) + STOP), "data is missing"),
    "tar format": (b"\x00" * 257 + b"ustar" + b"\x00" * 300, "tar"),
    "empty file": (b"", "not a checkpoint"),
    "text file": (b"hello, I am not a checkpoint\n", "not a checkpoint"),
    "safetensors: bad header": (struct.pack("<Q", 5) + b"{abcd", "not a valid safetensors"),
    "safetensors: unsupported dtype": (
        (lambda h: struct.pack("<Q", len(h)) + h + b"\x00")(
            json.dumps({"x": {"dtype": "F8_E4M3", "shape": [1], "data_offsets": [0, 1]}}).encode()),
        "F8_E4M3"),
}


@pytest.mark.parametrize("name", list(STRUCTURAL))
def test_structural_problem_raises_checkpoint_error_saying_what(name):
    blob, message = STRUCTURAL[name]
    with pytest.raises(ex.CheckpointError) as error:
        load_bytes(blob)
    assert message in str(error.value), str(error.value)


def test_deeply_nested_and_sparse_memo_pickles_do_not_blow_up():
    depth = 100_000
    nested = PROTO2 + b"]" * depth + b"a" * (depth - 1) + STOP  # iterative interpreter: no recursion limit
    result = load_bytes(as_zip(nested))
    assert isinstance(result, list)
    # a 4-byte memo index must not make the memo gigabytes large (C pickle's memo would try to)
    sparse = PROTO2 + text("x") + b"r\xff\xff\xff\xff" + b"0" + b"j\xff\xff\xff\xff" + STOP
    assert load_bytes(as_zip(sparse)) == "x"


# ===== truncation and mutation of real torch files ========================================
@pytest.fixture(scope="module")
def seed_files(torch):
    from safetensors.torch import save as safetensors_save

    g = torch.Generator().manual_seed(0)
    base = torch.randn(3, 4, generator=g)
    state = collections.OrderedDict(w=base, t=base.t(), h=torch.randn(5, generator=g).half(),
                                    i=torch.arange(4, dtype=torch.int32), b=torch.tensor([True, False]))
    state._metadata = {"": {"version": 1}}
    checkpoint = {"model": state, "epoch": 3, "history": [0.5, "x", (1, None)]}
    files = {}
    for name, legacy in (("zip", False), ("legacy", True)):
        buffer = io.BytesIO()
        torch.save(checkpoint, buffer, _use_new_zipfile_serialization=not legacy)
        files[name] = buffer.getvalue()
    files["safetensors"] = safetensors_save({k: v.contiguous() for k, v in state.items()})
    return files


@pytest.mark.parametrize("kind", ["zip", "legacy", "safetensors"])
def test_every_truncation_raises_checkpoint_error(seed_files, kind):
    blob = seed_files[kind]
    load_bytes(blob)  # the untouched file loads
    for cut in sorted(set(np.linspace(0, len(blob) - 1, 60, dtype=int))):
        with pytest.raises(ex.CheckpointError):
            load_bytes(blob[:cut])


def _check_plain(obj, seen=None):
    """A loaded object holds only tensors over ndarrays and plain Python data."""
    seen = set() if seen is None else seen
    if id(obj) in seen:
        return
    seen.add(id(obj))
    if isinstance(obj, Tensor):
        assert isinstance(obj.data, np.ndarray)
    elif isinstance(obj, dict):
        assert type(obj) in (dict, collections.OrderedDict)
        for key, value in obj.items():
            _check_plain(key, seen)
            _check_plain(value, seen)
    elif isinstance(obj, (list, tuple, set, frozenset)):
        for item in obj:
            _check_plain(item, seen)
    else:
        assert obj is None or type(obj) in (bool, int, float, complex, str, bytes, bytearray), type(obj)


def _mutate(data, blob):
    blob = bytearray(blob)
    for _ in range(data.draw(st.integers(1, 4), label="mutations")):
        kind = data.draw(st.sampled_from(["flip", "truncate", "insert", "delete", "set"]), label="kind")
        at = data.draw(st.integers(0, max(len(blob) - 1, 0)), label="at")
        if kind == "flip" and blob:
            blob[at] ^= 1 << data.draw(st.integers(0, 7), label="bit")
        elif kind == "set" and blob:
            blob[at] = data.draw(st.sampled_from([0, 1, 0x7F, 0x80, 0xFF, ord("("), ord("R"), ord(".")]))
        elif kind == "truncate":
            del blob[at:]
        elif kind == "insert":
            blob[at:at] = data.draw(st.binary(min_size=1, max_size=8), label="inserted")
        elif kind == "delete":
            del blob[at:at + data.draw(st.integers(1, 16), label="length")]
    return bytes(blob)


def _assert_only_checkpoint_errors(blob):
    try:
        result = load_bytes(blob)
    except ex.CheckpointError:
        return
    _check_plain(result)


FUZZ = settings(max_examples=int(os.environ.get("EXCITE_FUZZ_EXAMPLES", "120")), deadline=None, database=None,
                suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])


@pytest.mark.parametrize("kind", ["zip", "legacy", "safetensors"])
@FUZZ
@given(data=st.data())
def test_fuzzed_files_raise_only_checkpoint_errors(seed_files, kind, data):
    _assert_only_checkpoint_errors(_mutate(data, seed_files[kind]))


@FUZZ
@given(data=st.data())
def test_fuzzed_pickles_in_valid_zips_raise_only_checkpoint_errors(seed_files, data):
    # zip CRCs catch most byte flips before the pickle is read; re-zipping a mutated data.pkl
    # sends the mutations through the restricted interpreter itself
    original = zipfile.ZipFile(io.BytesIO(seed_files["zip"]))
    records = [(info.filename, original.read(info)) for info in original.infolist()]
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as rebuilt:
        for name, content in records:
            rebuilt.writestr(name, _mutate(data, content) if name.endswith("data.pkl") else content)
    _assert_only_checkpoint_errors(buffer.getvalue())
