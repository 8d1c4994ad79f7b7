"""Hostile checkpoints: pickles that try to run code are refused, naming what was refused, and never run.

Each payload is a real exploit (the control test shows plain ``pickle.loads`` runs it and creates
the sentinel file); excite must raise UnsafeCheckpointError before anything is called. Files that
crashed or hung the reader (denial of service) run in a worker process with a timeout.
Budget: ~8 s.
"""
import functools
import io
import os
import pickle
import struct
import subprocess
import zipfile

import numpy.testing._private.utils as numpy_test_utils
import pytest

import excite as ex

MAGIC = 0x1950A86A20F9469CFC6C


# ----- a tiny pickle assembler: hostile streams are spelled out opcode by opcode ----------
def glob(module, name):
    return b"c" + f"{module}\n{name}\n".encode()


def text(value):
    encoded = value.encode()
    return b"X" + struct.pack("<I", len(encoded)) + encoded


def short_text(value):  # SHORT_BINUNICODE (protocol 4)
    encoded = value.encode()
    return b"\x8c" + bytes([len(encoded)]) + encoded


def integer(value):
    if -2**31 <= value < 2**31:
        return b"J" + struct.pack("<i", value)
    encoded = pickle.encode_long(value)
    return b"\x8a" + bytes([len(encoded)]) + encoded  # LONG1


def tup(*parts):
    return b"(" + b"".join(parts) + b"t"


PROTO2, PROTO4, STOP, REDUCE, BUILD = b"\x80\x02", b"\x80\x04", b".", b"R", b"b"
EMPTY_TUPLE, EMPTY_DICT, EMPTY_LIST, SETITEM, APPENDS = b")", b"}", b"]", b"s", b"e"
MEMOIZE, POP, STACK_GLOBAL, NEWOBJ, BINPERSID, FALSE = b"\x94", b"0", b"\x93", b"\x81", b"Q", b"\x89"


def tensor_ops(key="0", numel=2, size=(2,), stride=(1,), offset=0, storage="FloatStorage", legacy=False):
    """A well-formed _rebuild_tensor_v2 call on storage ``key`` (legacy ids carry a 6th field, the view)."""
    view = b"N" if legacy else b""
    return (glob("torch._utils", "_rebuild_tensor_v2") + b"(" +
            tup(text("storage"), glob("torch", storage), text(key), text("cpu"), integer(numel), view) + BINPERSID +
            integer(offset) + tup(*map(integer, size)) + tup(*map(integer, stride)) + FALSE +
            glob("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE + b"t" + REDUCE)


def as_zip(data_pkl, records=(), archive="archive"):
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as z:
        z.writestr(f"{archive}/data.pkl", data_pkl)
        for name, data in records:
            z.writestr(f"{archive}/{name}", data)
    return buffer.getvalue()


def as_legacy(main_pkl, tail=None):
    head = b"".join(pickle.dumps(x, protocol=2) for x in
                    (MAGIC, 1001, {"protocol_version": 1001, "little_endian": True, "type_sizes": {}}))
    return head + main_pkl + (pickle.dumps([], protocol=2) if tail is None else tail)


class Reduce:
    """An object that pickles as ``function(*args)`` — how real exploits are written."""

    def __init__(self, function, args):
        self.function, self.args = function, args

    def __reduce__(self):
        return self.function, self.args


def payloads(sentinel):
    """name -> (data.pkl bytes, what the error must name, whether plain pickle would run it)."""
    command = f"touch {sentinel}"
    python_code = f"open({str(sentinel)!r}, 'w').close()"
    return {
        "os.system via GLOBAL+REDUCE": (pickle.dumps(Reduce(os.system, (command,)), protocol=2), "system", True),
        "builtins.eval via GLOBAL": (pickle.dumps(Reduce(eval, (python_code,)), protocol=2), "eval", True),
        "subprocess.Popen": (pickle.dumps(Reduce(subprocess.Popen, (["touch", str(sentinel)],)), protocol=2),
                             "subprocess.Popen", False),  # would run, but asynchronously
        "functools.partial": (pickle.dumps(Reduce(functools.partial(os.system, command), ()), protocol=2),
                              "functools.partial", True),
        "operator.attrgetter": (PROTO2 + glob("operator", "attrgetter") + tup(text("system")) + REDUCE +
                                tup(glob("builtins", "__import__") + tup(text("os")) + REDUCE) + REDUCE +
                                tup(text(command)) + REDUCE + STOP, "operator.attrgetter", True),
        "numpy.testing runstring": (pickle.dumps(Reduce(numpy_test_utils.runstring, (python_code, {})), protocol=2),
                                    "runstring", True),
        "STACK_GLOBAL with memoised strings": (
            PROTO4 + short_text("os") + MEMOIZE + POP + short_text("system") + MEMOIZE + POP +
            b"h\x00" + b"h\x01" + STACK_GLOBAL + short_text(command) + b"\x85" + REDUCE + STOP, "os.system", True),
        "STACK_GLOBAL protocol 4": (pickle.dumps(Reduce(os.system, (command,)), protocol=4), "system", True),
        "INST": (b"(S'" + command.encode() + b"'\nios\nsystem\n.", "INST os.system", True),
        "OBJ": (b"(" + glob("os", "system") + text(command) + b"o" + STOP, "os.system", True),
        "OBJ of an allowed class": (PROTO2 + b"(" + glob("collections", "OrderedDict") + b"o" + STOP, "OBJ", False),
        "NEWOBJ": (PROTO2 + glob("subprocess", "Popen") + EMPTY_LIST + b"(" + text("touch") + text(str(sentinel)) +
                   APPENDS + b"\x85" + NEWOBJ + STOP, "subprocess.Popen", False),
        "NEWOBJ of an allowed class": (PROTO2 + glob("collections", "OrderedDict") + EMPTY_TUPLE + NEWOBJ + STOP,
                                       "NEWOBJ", False),
        "BUILD __setstate__ trick": (PROTO2 + glob("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE + EMPTY_DICT +
                                     text("__setstate__") + glob("os", "system") + SETITEM + BUILD +
                                     text(command) + BUILD + STOP, "os.system", False),
        "BUILD on a list": (PROTO2 + EMPTY_LIST + EMPTY_DICT + text("append") + integer(1) + SETITEM + BUILD + STOP,
                            "BUILD on a list", False),
        "REDUCE of a non-allow-listed object": (PROTO2 + text("os.system") + tup(text(command)) + REDUCE + STOP,
                                                "REDUCE", False),
        "STACK_GLOBAL from computed strings": (
            PROTO4 + glob("_codecs", "encode") + tup(text("os"), text("latin1")) + REDUCE + short_text("system") +
            STACK_GLOBAL + STOP, "STACK_GLOBAL", False),
        "EXT1": (PROTO2 + b"\x82\x01" + STOP, "EXT1", False),
        "persistent id that is not a storage": (PROTO2 + tup(text("module"), text("os"), text("x")) + BINPERSID + STOP,
                                                "persistent id 'module'", False),
        "persistent id that is a string": (PROTO2 + text("0") + BINPERSID + STOP, "persistent id", False),
    }


PAYLOAD_NAMES = list(payloads("x"))


@pytest.mark.parametrize("wrapper", ["zip", "legacy"])
@pytest.mark.parametrize("name", PAYLOAD_NAMES)
def test_hostile_pickle_is_refused_and_never_runs(tmp_path, name, wrapper):
    sentinel = tmp_path / "pwned"
    data_pkl, refused, _ = payloads(sentinel)[name]
    blob = as_zip(data_pkl) if wrapper == "zip" else as_legacy(data_pkl)
    (tmp_path / "evil.pth").write_bytes(blob)
    with pytest.raises(ex.UnsafeCheckpointError, match="refused") as error:
        ex.load(tmp_path / "evil.pth")
    assert refused in str(error.value)
    assert not sentinel.exists()


@pytest.mark.parametrize("name", [n for n in PAYLOAD_NAMES if payloads("x")[n][2]])
def test_control_the_payloads_are_live_under_plain_pickle(tmp_path, name):
    sentinel = tmp_path / "pwned"
    data_pkl, _, _ = payloads(sentinel)[name]
    try:
        pickle.loads(data_pkl)
    except Exception:  # noqa: S110 (some payloads fail after their side effect; the effect is what counts)
        pass
    assert sentinel.exists()


def test_refused_before_any_rebuild_function_runs(tmp_path, monkeypatch):
    # a valid tensor comes first and the exploit last: the pre-scan refuses before rebuilding anything
    from excite.io import _tensors

    calls = []
    real = _tensors.LoadContext.rebuild_tensor
    monkeypatch.setattr(_tensors.LoadContext, "rebuild_tensor",
                        lambda self, *a, **k: calls.append(a) or real(self, *a, **k))
    sentinel = tmp_path / "pwned"
    data_pkl = PROTO2 + EMPTY_LIST + b"(" + tensor_ops() + glob("os", "system") + tup(text(f"touch {sentinel}")) + \
        REDUCE + APPENDS + STOP
    blob = as_zip(data_pkl, [("data/0", b"\x00" * 8)])
    with pytest.raises(ex.UnsafeCheckpointError, match="os.system"):
        ex.load(io.BytesIO(blob))
    assert calls == [] and not sentinel.exists()


def test_build_on_a_tensor_is_refused(tmp_path):
    data_pkl = PROTO2 + tensor_ops() + EMPTY_DICT + text("data") + text("x") + SETITEM + BUILD + STOP
    with pytest.raises(ex.UnsafeCheckpointError, match="BUILD on a Tensor"):
        ex.load(io.BytesIO(as_zip(data_pkl, [("data/0", b"\x00" * 8)])))


@pytest.mark.filterwarnings("ignore::FutureWarning")  # torch.jit is deprecated, and still what attackers use
def test_torchscript_archive_is_refused(torch, tmp_path):
    scripted = torch.jit.script(torch.nn.Linear(2, 2))
    torch.jit.save(scripted, tmp_path / "scripted.pt")
    with pytest.raises(ex.UnsafeCheckpointError, match="TorchScript"):
        ex.load(tmp_path / "scripted.pt")


def test_bare_hostile_pickle_is_refused(tmp_path):
    sentinel = tmp_path / "pwned"
    (tmp_path / "evil.pkl").write_bytes(pickle.dumps(Reduce(os.system, (f"touch {sentinel}",)), protocol=2))
    with pytest.raises(ex.UnsafeCheckpointError, match="system"):
        ex.load(tmp_path / "evil.pkl")
    assert not sentinel.exists()


def test_an_allowed_pickle_still_loads():
    # the allow-list is not "refuse everything": the same machinery builds a real state_dict
    data_pkl = PROTO2 + glob("collections", "OrderedDict") + EMPTY_TUPLE + REDUCE + text("w") + tensor_ops() + \
        SETITEM + STOP
    loaded = ex.load(io.BytesIO(as_zip(data_pkl, [("data/0", struct.pack("<2f", 1.5, -2.0))])))
    assert list(loaded) == ["w"] and loaded["w"].tolist() == [1.5, -2.0]


# ===== denial of service: files that crashed or hung the reader ==============================
# Each runs in a worker process (io_fuzz_worker) with a memory limit and a timeout, so a
# regression fails this test as "crashed" or "hang" instead of killing or stalling the run.
P61 = 2**61 - 1  # CPython hashes an int n to n mod P61: its multiples all hash to 0
BINGET0, TUPLE1, ADDITEMS, FROZENSET, EMPTY_SET, PUT0, SETITEMS = b"h\x00", b"\x85", b"\x90", b"\x91", b"\x8f", \
    b"q\x00", b"u"


def long4(value):
    encoded = pickle.encode_long(value)
    return b"\x8b" + struct.pack("<i", len(encoded)) + encoded


def deep_tuple(depth):
    return b"N" + TUPLE1 * depth


def colliding_pairs(count):
    """``count`` distinct (int, int) tuples with one hash value, by inverting CPython's tuple hash (xxHash)."""
    mask, p1, p2, p5 = (1 << 64) - 1, 11400714785074694791, 14029467366897019727, 2870177450012600261
    p1_inverse, p2_inverse = pow(p1, -1, 1 << 64), pow(p2, -1, 1 << 64)
    target = (12345 - (2 ^ (p5 ^ 3527539))) * p1_inverse & mask
    target = ((target >> 31) | (target << 33)) & mask  # undo the last rotation
    pairs, first = [], 0
    while len(pairs) < count:
        first += 1
        after_first = (p5 + first * p2) & mask
        after_first = ((after_first << 31) | (after_first >> 33)) * p1 & mask
        second = (target - after_first) * p2_inverse & mask
        second -= (second >> 63) << 64
        if -P61 < second < P61 and second != -1:  # an int that hashes to itself
            pairs.append((first, second))
    assert len({hash(pair) for pair in pairs[:100]}) == 1  # the inversion matches this Python's tuple hash
    return pairs


def dict_of(keys):
    return PROTO2 + EMPTY_DICT + b"(" + b"".join(key + b"N" for key in keys) + SETITEMS + STOP


def multiples_of_p61(count):
    return (integer(P61 * (i + 1)) for i in range(count))


def denial_of_service_cases():
    """name -> (data.pkl, what the CheckpointError must say); each crashed or hung the reader before."""
    deep = deep_tuple(1000)  # each way into hashing refuses it; the crash itself needs ~100,000 levels
    return {
        "150,000-deep tuple as a dict key (SIGSEGV in hash)": (
            PROTO2 + EMPTY_DICT + deep_tuple(150_000) + b"N" + SETITEM + STOP, "is a tuple holding more than 64"),
        "deep tuple as a set item": (PROTO4 + EMPTY_SET + b"(" + deep + ADDITEMS + STOP, "more than 64"),
        "deep tuple in a frozenset": (PROTO4 + b"(" + deep + FROZENSET + STOP, "more than 64 values"),
        "deep tuple as an OrderedDict key": (
            PROTO2 + glob("collections", "OrderedDict") + tup(EMPTY_LIST + b"(" + deep + b"N" + b"l" + b"a") +
            REDUCE + STOP, "an OrderedDict key in <BytesIO> is a tuple holding more than 64 values"),
        "deep tuple as a value": (PROTO2 + deep + STOP, "nests containers more than 256 levels deep"),
        "deep list as a value": (PROTO2 + EMPTY_LIST * 1000 + b"a" * 999 + STOP, "more than 256 levels deep"),
        # quadratic: each took 5-20 s before, and four times that for twice the keys
        "40,000 int keys hashing alike": (dict_of(multiples_of_p61(40_000)), "a dict key in <BytesIO> is an int of "
                                                                            "65 bits"),
        "40,000 int set items hashing alike": (
            PROTO4 + EMPTY_SET + b"(" + b"".join(multiples_of_p61(40_000)) + ADDITEMS + STOP,
            "a set item in <BytesIO> is an int of 65 bits"),
        "40,000 (int, int) keys hashing alike": (
            dict_of(tup(integer(a), integer(b)) for a, b in colliding_pairs(40_000)),
            "a dict in <BytesIO> has more than 8 keys with the same hash value (12345)"),
        "15 64-bit int keys hashing alike": (
            dict_of(integer(P61 * k) for k in range(-7, 8)), "more than 8 keys with the same hash value (0)"),
        "a 1 MB int key hashed again in 10,000 dicts": (
            PROTO2 + long4(1 << 8_000_000) + PUT0 + POP + EMPTY_LIST + b"(" +
            (EMPTY_DICT + BINGET0 + b"N" + SETITEM) * 10_000 + APPENDS + STOP, "is an int of 8000001 bits"),
    }


def test_denial_of_service_files_get_checkpoint_error_without_crash_or_hang(tmp_path):
    import io_fuzz_worker

    cases = denial_of_service_cases()
    paths = []
    for number, (data_pkl, _) in enumerate(cases.values()):
        paths.append(str(tmp_path / f"case{number}.pth"))
        with open(paths[-1], "wb") as f:
            f.write(as_zip(data_pkl))
    results = io_fuzz_worker.run_isolated(["--files", *paths], len(paths), case_timeout=30)
    for (name, (_, message)), result in zip(cases.items(), results):
        assert result is not None and result["outcome"] == "checkpoint-error", (name, result)
        assert message in result["detail"], (name, result["detail"])
