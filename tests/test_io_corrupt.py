"""Corrupt, truncated and over-limit checkpoints: only CheckpointError (with a message saying what is wrong) escapes.

Mutation fuzzing is in test_io_fuzz.py. Budget: ~4 s.
"""
import collections
import io
import json
import pickle
import struct
import warnings
import zipfile

import numpy as np
import pytest

import excite as ex
from excite.io import _limits, pth
from test_io_hostile import (BINGET0, BUILD, EMPTY_DICT, EMPTY_LIST, EMPTY_TUPLE, FALSE, POP, PROTO2, PROTO4,
                             PUT0, REDUCE, SETITEM, STOP, as_legacy, as_zip, deep_tuple, glob, integer, text, tup,
                             tensor_ops)

FLOATS_2 = struct.pack("<2f", 1.0, 2.0)


def load_bytes(blob):
    return ex.load(io.BytesIO(blob))


def zip_with_duplicate(data_pkl, name, first, second):
    buffer = io.BytesIO()
    with warnings.catch_warnings(), zipfile.ZipFile(buffer, "w") as z:
        warnings.simplefilter("ignore")  # zipfile warns about the duplicate it is asked to write
        z.writestr("archive/data.pkl", data_pkl)
        z.writestr(f"archive/{name}", first)
        z.writestr(f"archive/{name}", second)
    return buffer.getvalue()


def ordered_dict_with(state):
    """An OrderedDict whose BUILD state is the pickled dict ``state`` (attribute name -> ops)."""
    items = b"".join(text(name) + ops for name, ops in state.items())
    return PROTO2 + glob("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE + EMPTY_DICT + b"(" + items + b"u" + \
        BUILD


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
    "duplicate storage record": (
        zip_with_duplicate(PROTO2 + tensor_ops() + STOP, "data/0", FLOATS_2, struct.pack("<2f", 3, 4)),
        "holds 1 record name(s) more than once (first: 'archive/data/0')"),
    "legacy: length field longer than the file": (
        as_legacy(PROTO4 + b"\x8e" + struct.pack("<Q", 2**60) + b"xx" + STOP),
        "expected 1152921504606846976 bytes in a bytes8, but only 9 remain"),
    "OrderedDict attribute other than _metadata": (
        as_zip(ordered_dict_with({"items": glob("torch._utils", "_rebuild_tensor_v2")}) + STOP),
        "refused BUILD setting attribute 'items' of an OrderedDict"),
    "_metadata that is not a dict": (
        as_zip(ordered_dict_with({"_metadata": EMPTY_LIST}) + STOP), "_metadata must be a dict, got list"),
    "_metadata filled with a non-dict after BUILD": (
        as_zip(PROTO2 + EMPTY_DICT + PUT0 + POP + ordered_dict_with({"_metadata": BINGET0}) + BINGET0 +
               text("layer") + integer(3) + SETITEM + POP + STOP),
        "whose _metadata maps 'layer' to 3; it maps module names to dicts"),
    "_metadata holding an allow-listed global": (
        as_zip(PROTO2 + ordered_dict_with({"_metadata": EMPTY_DICT + text("") + EMPTY_DICT + text("version") +
                                           glob("torch._utils", "_rebuild_tensor_v2") + SETITEM + SETITEM}) + STOP),
        "holds <allow-listed torch._utils._rebuild_tensor_v2> as a value of its own"),
    "a tensor as a dict key": (
        as_zip(PROTO2 + EMPTY_DICT + tensor_ops() + integer(1) + SETITEM + STOP, [("data/0", FLOATS_2)]),
        "a dict key in <BytesIO> is or holds a Tensor"),
    "a tuple key of 65 values": (
        as_zip(PROTO2 + EMPTY_DICT + tup(*[integer(i) for i in range(65)]) + integer(1) + SETITEM + STOP),
        "is a tuple holding more than 64 values"),
    "a list inside a tuple key": (
        as_zip(PROTO2 + EMPTY_DICT + tup(integer(1), EMPTY_LIST) + integer(1) + SETITEM + STOP),
        "a dict key in <BytesIO> is or holds a list"),
    "an int key of 65 bits": (
        as_zip(PROTO2 + EMPTY_DICT + integer(-2**64 - 1) + integer(1) + SETITEM + STOP), "is an int of 65 bits"),
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


def nested_lists(depth):
    return PROTO2 + EMPTY_LIST * depth + b"a" * (depth - 1) + STOP


@pytest.mark.parametrize("build", [nested_lists, lambda depth: PROTO2 + deep_tuple(depth) + STOP,
                                   lambda depth: PROTO2 + EMPTY_DICT + (text("k") + EMPTY_DICT) * (depth - 1) +
                                   SETITEM * (depth - 1) + STOP], ids=["lists", "tuples", "dicts"])
def test_nesting_up_to_the_limit_loads_and_deeper_is_refused_naming_it(build):
    limit = _limits.MAX_NESTING
    loaded = load_bytes(as_zip(build(limit)))
    for _ in range(limit - 1):  # the innermost container is the limit-th level
        (loaded,) = loaded.values() if isinstance(loaded, dict) else loaded
    assert loaded in ([], (None,), {})
    with pytest.raises(ex.CheckpointError, match=f"nests containers more than {limit} levels deep"):
        load_bytes(as_zip(build(limit + 1)))


def test_nesting_made_by_filling_lists_after_nesting_them_is_refused():
    # memoised empty lists are put inside each other afterwards: no list is deep when it is built
    count = _limits.MAX_NESTING + 1
    make = b"".join(EMPTY_LIST + b"r" + struct.pack("<I", i) + POP for i in range(count))
    link = b"".join(b"j" + struct.pack("<I", i) + b"j" + struct.pack("<I", i + 1) + b"a" + POP for i in range(count - 1))
    blob = as_zip(PROTO2 + make + link + b"j" + struct.pack("<I", 0) + STOP)
    with pytest.raises(ex.CheckpointError, match="more than 256 levels deep"):
        load_bytes(blob)


def test_a_list_holding_itself_loads():
    loaded = load_bytes(as_zip(PROTO2 + EMPTY_LIST + PUT0 + BINGET0 + b"a" + STOP))
    assert loaded[0] is loaded


def test_sparse_memo_indices_do_not_blow_up():
    # a 4-byte memo index must not make the memo gigabytes large (C pickle's memo would try to)
    sparse = PROTO2 + text("x") + b"r\xff\xff\xff\xff" + b"0" + b"j\xff\xff\xff\xff" + STOP
    assert load_bytes(as_zip(sparse)) == "x"


@pytest.mark.parametrize("protocol", [2, 4])
def test_keys_a_checkpoint_may_hold_load(protocol):
    limit = _limits.MAX_KEY_ITEMS
    obj = {"optimizer": {"state": {i: {"step": i} for i in range(5000)}},  # an optimizer's parameter ids
           "pairs": {(1, "a"): 1.5, (-1, -2, None): 2, (2**63, -2**63): 3, tuple(range(limit)): 4},
           "scalars": {-1: "a", -2: "b", 0.5: "c", None: "d", True: "e", b"raw": "f", complex(1, 2): "g"},
           "sets": {1, (2, "x"), frozenset({3, 4}), b"y"}, "nested": {frozenset({(1, 2), "z"}): 5}}
    # written by Python's own pickle: excite's writer has no frozenset
    assert load_bytes(as_zip(pickle.dumps(obj, protocol=protocol))) == obj


def test_eight_keys_sharing_a_hash_load():
    # -1 and -2 hash alike, and so do ints 2**61 - 1 apart: a handful is fine, it is thousands that hurt
    keys = [k * (2**61 - 1) for k in range(-3, 5)] + [-1, -2]
    data_pkl = PROTO2 + EMPTY_DICT + b"(" + b"".join(integer(k) + integer(i) for i, k in enumerate(keys)) + b"u" + STOP
    assert load_bytes(as_zip(data_pkl)) == {k: i for i, k in enumerate(keys)}


class RunsOutOfMemory(io.BytesIO):
    """A file object whose large reads fail as they would past the machine's (or the rlimit's) memory."""

    def read(self, count=-1):
        if count > 1 << 20:
            raise MemoryError
        return super().read(count)


def test_length_field_longer_than_the_file_is_refused_before_reading_it(tmp_path):
    # a file's reader, unlike a BytesIO, allocates the whole claimed length up front
    (tmp_path / "claims.pth").write_bytes(as_legacy(PROTO4 + b"\x8e" + struct.pack("<Q", 2**60) + b"xx" + STOP))
    with pytest.raises(ex.CheckpointError, match="a length field ending at byte 107 claims 1152921504606846976 "
                                                 "bytes, but only 9 remain"):
        ex.load(tmp_path / "claims.pth")


def test_out_of_memory_while_reading_a_pickle_says_what_was_claimed():
    blob = as_legacy(PROTO4 + b"\x8e" + struct.pack("<Q", 3 << 20) + b"x" * (3 << 20) + STOP)
    with pytest.raises(ex.CheckpointError, match="ran out of memory for the 3145728 bytes that the length field "
                                                 "ending at byte 107 claims"):
        ex.load(RunsOutOfMemory(blob))


def test_out_of_memory_for_a_storage_says_what_was_claimed():
    float32 = next(t for t in pth._dtypes.ELEMENT_TYPES if t.torch_name == "float32")
    with pytest.raises(ex.CheckpointError, match=f"storage '0' of x claims {4 << 60} bytes, more than this "
                                                 f"process can allocate"):
        pth._allocate(1 << 60, float32, "storage '0' of x")


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
