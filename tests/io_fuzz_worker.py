"""Loads checkpoints in a worker process under a memory limit, reporting each outcome; and the parent side that runs it.

A crash, hang or memory blow-up while loading must not take the test run with it, so the tests
hand the cases to this module run as ``python -m io_fuzz_worker`` (with the tests folder on
PYTHONPATH) and watch it from outside: ``run_isolated`` gives each case a timeout and restarts the
worker after a crash or a hang. Cases are either files (``--files``) or mutants of seed
checkpoints (``--fuzz``), which are generated from (seed, kind, index) alone, so a failing case
is reproduced by ``python tests/io_fuzz_worker.py --replay KIND INDEX --seed SEED [--seeds DIR]``.
"""
import argparse
import base64
import collections
import io
import json
import os
import queue
import random
import resource
import subprocess
import sys
import tempfile
import threading
import traceback
import zipfile

import numpy as np

import excite as ex
from excite.tensor import Tensor

KINDS = ("zip", "zip-pickle", "legacy", "safetensors")
MEMORY_HEADROOM_MB = 512  # address space a worker may add after start-up; a seed checkpoint needs < 1 MB
_INTERESTING = [0, 1, 2, 0x7F, 0x80, 0xFF, 0x7FFF, 0x8000, 0xFFFF, 0x7FFFFFFF, 0x80000000, 0xFFFFFFFF,
                2**63 - 1, 2**63, 2**64 - 1, 2**61 - 1]
_PICKLE_BYTES = b"()]}tuealsbR.0h\x85\x86\x87\x8f\x90\x91\x94\x93Qq(N\x88\x89"


# ===== seed checkpoints and their mutants ==================================================
def seed_checkpoints():
    """kind -> bytes of excite's own checkpoints: a small training checkpoint, in every format."""
    ex.manual_seed(0)
    model = ex.nn.Sequential(ex.nn.Conv2d(2, 3, 3, bias=False), ex.nn.BatchNorm2d(3), ex.nn.Flatten(),
                             ex.nn.Linear(3, 2))
    state = model.state_dict()
    base = ex.from_numpy(np.arange(12, dtype=np.float32).reshape(3, 4))
    extras = collections.OrderedDict(
        view=ex.from_numpy(base.data.T), half=ex.from_numpy(np.array([1.5, -2.0], dtype=np.float16)),
        flags=ex.from_numpy(np.array([True, False])), ids=ex.from_numpy(np.arange(3, dtype=np.int64)))
    checkpoint = {"model": state, "extras": extras, "base": base, "epoch": 3, "lr": 0.1,
                  "optimizer": {"state": {0: {"momentum_buffer": base}, 1: {"step": 7}},
                                "param_groups": [{"lr": 0.1, "params": [0, 1], "nesterov": False}]},
                  "history": [0.5, "x", (1, None), [2.5e-3, -1]], "tags": {"a", "b", 3}, "blob": b"\x00\xffz",
                  "key pair": {(1, "a"): complex(1, 2), (2, "b"): None}}
    seeds = {}
    for kind, zip_format in (("zip", True), ("legacy", False)):
        buffer = io.BytesIO()
        ex.save(checkpoint, buffer, _use_new_zipfile_serialization=zip_format)
        seeds[kind] = buffer.getvalue()
    buffer = io.BytesIO()
    ex.save({**state, **extras, "base": base}, buffer, format="safetensors")
    seeds["safetensors"] = buffer.getvalue()
    return seeds


def load_seeds(directory):
    """kind -> bytes of the seed files in ``directory`` (``zip.bin``, ``legacy.bin``, ...), or excite's own."""
    if directory is None:
        return seed_checkpoints()
    seeds = {}
    for name in os.listdir(directory):
        kind = name.rsplit(".", 1)[0]
        with open(os.path.join(directory, name), "rb") as f:
            seeds[kind] = f.read()
    return seeds


def available_kinds(seeds):
    kinds = [kind for kind in KINDS if kind in seeds]
    return kinds + ["zip-pickle"] if "zip" in seeds and "zip-pickle" not in kinds else kinds


def mutate(blob, rng):
    """(mutated bytes, what was done): one to four byte-level mutations of ``blob``."""
    data, done = bytearray(blob), []
    for _ in range(rng.randint(1, 4)):
        what = rng.choice(["flip", "byte", "int", "insert", "delete", "duplicate", "splice", "truncate"])
        at = rng.randrange(len(data) + 1)
        if what == "flip" and at < len(data):
            data[at] ^= 1 << rng.randrange(8)
        elif what == "byte" and at < len(data):
            data[at] = rng.choice(_PICKLE_BYTES + bytes([0, 0xFF, rng.randrange(256)]))
        elif what == "int":  # a length, count or offset field set to a boundary value
            width = rng.choice([1, 2, 4, 8])
            value = (rng.choice(_INTERESTING) + rng.choice([-1, 0, 0, 1])) % (1 << (8 * width))
            data[at:at + width] = value.to_bytes(width, "little")
        elif what == "insert":
            data[at:at] = bytes(rng.randrange(256) for _ in range(rng.randint(1, 8)))
        elif what == "delete":
            del data[at:at + rng.randint(1, 32)]
        elif what == "duplicate":  # repeats opcodes: nesting, extra items, repeated records
            start = rng.randrange(len(data) + 1)
            piece = data[start:start + rng.randint(1, 64)]
            data[at:at] = piece * rng.choice([1, 1, 2, 16])
        elif what == "splice":
            start = rng.randrange(len(data) + 1)
            piece = data[start:start + rng.randint(1, 32)]
            data[at:at + len(piece)] = piece
        elif what == "truncate":
            del data[at:]
        done.append(f"{what}@{at}")
    return bytes(data), done


def _rezip(records, pickle_bytes):
    """The zip of ``records`` with data.pkl replaced, written with correct CRCs so the pickle is what gets tested."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        for name, content in records:
            info = zipfile.ZipInfo(name, date_time=(1980, 1, 1, 0, 0, 0))
            archive.writestr(info, pickle_bytes if name.endswith("/data.pkl") else content)
    return buffer.getvalue()


def make_case(seeds, kind, index, seed):
    """(bytes, description) of fuzz case ``index`` of ``kind``: a function of its arguments only."""
    rng = random.Random(f"{seed}/{kind}/{index}")
    if kind == "zip-pickle":
        archive = zipfile.ZipFile(io.BytesIO(seeds["zip"]))
        records = [(info.filename, archive.read(info)) for info in archive.infolist()]
        data_pkl = next(content for name, content in records if name.endswith("/data.pkl"))
        mutated, done = mutate(data_pkl, rng)
        return _rezip(records, mutated), done
    return mutate(seeds[kind], rng)


# ===== one case in this process =============================================================
def check_plain(obj):
    """A loaded object holds only tensors over ndarrays and plain Python data (iteratively: it may nest)."""
    stack, seen = [obj], set()
    while stack:
        obj = stack.pop()
        if id(obj) in seen:
            continue
        seen.add(id(obj))
        if isinstance(obj, Tensor):
            assert isinstance(obj.data, np.ndarray), type(obj.data)
        elif isinstance(obj, dict):
            assert type(obj) in (dict, collections.OrderedDict), type(obj)
            attributes = vars(obj) if type(obj) is collections.OrderedDict else {}
            assert set(attributes) <= {"_metadata"}, sorted(attributes)
            stack.extend(obj.keys())
            stack.extend(obj.values())
            stack.extend(attributes.values())
        elif isinstance(obj, (list, tuple, set, frozenset)):
            stack.extend(obj)
        else:
            assert obj is None or isinstance(obj, (bool, int, float, complex, str, bytes, bytearray)), type(obj)


def _caused_by_memory_error(error):
    while error is not None:
        if isinstance(error, MemoryError):
            return True
        error = error.__cause__ or error.__context__
    return False


def run_case(blob):
    """{"outcome": "ok" | "checkpoint-error" | "failed", "detail": ...} of loading ``blob``.

    "ok" also means the result is plain data that saves again (or is refused by save with excite's
    own InvalidArgumentError). A CheckpointError that hides a MemoryError is a memory blow-up, and
    one with a ``__cause__`` comes from ``load``'s last-resort handler of exceptions no check
    foresaw: both are failures.
    """
    try:
        result = ex.load(io.BytesIO(blob))
    except ex.CheckpointError as e:
        if _caused_by_memory_error(e):
            return {"outcome": "failed", "detail": f"memory blow-up: {type(e).__name__}: {e}"[:2000]}
        if e.__cause__ is not None:
            return {"outcome": "failed", "detail": "unforeseen: " + "".join(
                traceback.format_exception(e.__cause__))[-4000:]}
        return {"outcome": "checkpoint-error", "detail": f"{type(e).__name__}: {e}"[:2000]}
    except BaseException:  # noqa: B036 (anything else, even SystemExit, is the bug this looks for)
        return {"outcome": "failed", "detail": traceback.format_exc()[-4000:]}
    try:
        check_plain(result)
        try:
            ex.save(result, io.BytesIO())
        except ex.InvalidArgumentError:
            pass  # a frozenset or bytearray loads but is not something excite writes
    except BaseException:  # noqa: B036
        return {"outcome": "failed", "detail": "loaded, but: " + traceback.format_exc()[-4000:]}
    return {"outcome": "ok", "detail": type(result).__name__}


# ===== the worker process ===================================================================
def _limit_memory(headroom_mb):
    if not os.path.exists("/proc/self/statm"):  # Linux only; elsewhere the timeout still applies
        return
    with open("/proc/self/statm") as f:
        used = int(f.read().split()[0]) * resource.getpagesize()
    limit = used + headroom_mb * (1 << 20)
    resource.setrlimit(resource.RLIMIT_AS, (limit, resource.getrlimit(resource.RLIMIT_AS)[1]))


_channel = None


def _emit(message):
    global _channel
    if _channel is None:  # reports go to the real stdout; anything else printed goes to stderr
        _channel = os.fdopen(os.dup(1), "w")
        os.dup2(2, 1)
        sys.stdout = sys.stderr
    _channel.write(json.dumps(message) + "\n")
    _channel.flush()


def worker_main(args):
    if args.files:
        blob_of, count = (lambda number: _read_file(args.files[number])), len(args.files)  # noqa: E731
    else:
        seeds = load_seeds(args.seeds)
        blob_of = lambda number: make_case(seeds, args.fuzz, args.start + number, args.seed)[0]  # noqa: E731
        count = args.stop - args.start
        for blob in seeds.values():  # import what loading needs before the limit, as a real caller would have
            run_case(blob)
    _limit_memory(args.memory_mb)
    _emit({"ready": True})
    for number in range(args.first, count):
        blob = blob_of(number)
        _emit({"start": number})
        _emit({"case": number, **run_case(blob)})


def _read_file(path):
    with open(path, "rb") as f:
        return f.read()


def replay_main(args):
    kind, index = args.replay[0], int(args.replay[1])
    blob, done = make_case(load_seeds(args.seeds), kind, index, args.seed)
    print(f"case {kind} {index} (seed {args.seed}): {len(blob)} bytes after {', '.join(done)}")
    if args.write:
        with open(args.write, "wb") as f:
            f.write(blob)
    ex.load(io.BytesIO(blob))  # in this process, so a debugger sees it
    print("loaded without error")


def parse(argv):
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--fuzz", choices=KINDS, help="load mutants of this seed kind")
    parser.add_argument("--start", type=int, default=0)
    parser.add_argument("--stop", type=int, default=0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--seeds", help="folder of seed files KIND.bin (default: excite's own checkpoints)")
    parser.add_argument("--files", nargs="+", help="load these files instead")
    parser.add_argument("--first", type=int, default=0, help="skip the cases before this one")
    parser.add_argument("--memory-mb", type=int, default=MEMORY_HEADROOM_MB)
    parser.add_argument("--replay", nargs=2, metavar=("KIND", "INDEX"), help="load one fuzz case in this process")
    parser.add_argument("--write", help="with --replay: also write the case to this file")
    return parser.parse_args(argv)


# ===== the parent side ======================================================================
def run_isolated(worker_args, count, case_timeout=30.0, startup_timeout=120.0, max_failures=5):
    """Run the worker (``python -m io_fuzz_worker *worker_args``) on its cases 0..count-1; return their results.

    Each result is the worker's report for that case, or {"outcome": "crashed" | "hang", ...} when
    the worker died on it or took longer than ``case_timeout``; the worker then restarts after that
    case. After the ``max_failures``-th failure the remaining cases are not run (their result is None).
    """
    results, first = [None] * count, 0
    for _ in range(max_failures):
        failed = _run_worker([*worker_args, "--first", str(first)], results, case_timeout, startup_timeout)
        if failed is None:
            break
        first = failed + 1
    return results


def _run_worker(argv, results, case_timeout, startup_timeout):
    """Run one worker process; the number of the case it crashed or hung on, or None if it finished."""
    env = dict(os.environ)
    tests = os.path.dirname(os.path.abspath(__file__))
    env["PYTHONPATH"] = os.pathsep.join(p for p in (tests, env.get("PYTHONPATH")) if p)
    with tempfile.TemporaryFile() as log:
        process = subprocess.Popen([sys.executable, "-m", "io_fuzz_worker", *argv], stdin=subprocess.DEVNULL,
                                   stdout=subprocess.PIPE, stderr=log, env=env)
        messages = queue.Queue()
        reader = threading.Thread(target=_read_messages, args=(process.stdout, messages), daemon=True)
        reader.start()
        try:
            if _next(messages, startup_timeout) != {"ready": True}:
                raise RuntimeError(f"the fuzz worker did not start: {_tail(log)}")
            current = None
            while True:
                message = _next(messages, case_timeout)
                if message == "timeout":
                    if current is None:
                        raise RuntimeError(f"the fuzz worker stalled between cases: {_tail(log)}")
                    results[current] = {"outcome": "hang", "detail": f"no result within {case_timeout} s"}
                    return current
                if message == "end":  # finished, or died in the middle of a case
                    status = process.wait(timeout=60)
                    if current is None and status == 0:
                        return None
                    if current is None:
                        raise RuntimeError(f"the fuzz worker failed between cases: {_tail(log)}")
                    results[current] = {"outcome": "crashed", "detail": f"exit status {status}: {_tail(log)}"}
                    return current
                if "start" in message:
                    current = message["start"]
                else:
                    results[message.pop("case")] = message
                    current = None
        finally:
            if process.poll() is None:
                process.kill()  # our own child, by its handle
            process.wait()
            reader.join(timeout=10)


def _read_messages(stream, messages):
    for line in stream:
        messages.put(json.loads(line))
    messages.put("end")


def _next(messages, timeout):
    try:
        return messages.get(timeout=timeout)
    except queue.Empty:
        return "timeout"


def _tail(log):
    log.seek(0)
    return log.read().decode("utf-8", "replace")[-3000:] or "(no output)"


def reproducer(kind, index, seed, seeds_dir, blob, done):
    """What a failing fuzz case prints: how to replay it, and the file itself if it is small."""
    command = f"python tests/io_fuzz_worker.py --replay {kind} {index} --seed {seed}"
    command += f" --seeds {seeds_dir}" if seeds_dir else ""
    text = f"  replay: {command}\n  mutations: {', '.join(done)}\n"
    if len(blob) <= 1 << 16:
        text += f"  file (base64): {base64.b64encode(blob).decode()}\n"
    return text


if __name__ == "__main__":
    arguments = parse(sys.argv[1:])
    if arguments.replay:
        replay_main(arguments)
    else:
        worker_main(arguments)
