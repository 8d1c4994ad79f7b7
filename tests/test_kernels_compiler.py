"""Kernels compile in worker processes with a notice (issue 15): a bar on a terminal, a plain line
otherwise; Ctrl-C stops the wait; the workload lists (signatures.txt) name real kernels.

Budget: about 10 s (two subprocesses compile one small kernel each into an empty cache).
"""
import io
import os
import pty
import select
import signal
import subprocess
import sys
import time

import pytest

from excite.kernels import compiler

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# the smallest build: an activation loop over a float32 vector
SMALL = ("excite.kernels.compiled.elementwise", "activation_forward", "parallel")
SMALL_SIG = "array(float32,1,C); array(float32,1,C); int64"


def _env(home, **extra):
    env = dict(os.environ, EXCITE_HOME=str(home), PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for name in ("NUMBA_CACHE_DIR", "EXCITE_PROGRESS_TTY", compiler.WORKERS_ENV):
        env.pop(name, None)
    return dict(env, **extra)


def test_plain_notice_when_not_a_terminal():
    stream = io.StringIO()
    progress = compiler.Progress(stream, terminal=False)
    progress.add(2)
    progress.finish_one()
    progress.finish_one()
    progress.add()  # a second round later in the same process: no second announcement
    progress.finish_one()
    lines = stream.getvalue().splitlines()
    assert lines[0].startswith(f"excite: {compiler.NOTICE}") and "cached in" in lines[0]
    assert lines[1].startswith("excite: compiled 2 kernels in")
    assert lines[2].startswith("excite: compiled 1 kernels in") and len(lines) == 3
    assert "\r" not in stream.getvalue()


def test_progress_bar_on_a_terminal():
    master, slave = pty.openpty()
    try:
        with os.fdopen(slave, "w", closefd=True) as stream:
            progress = compiler.Progress(stream)
            assert progress.terminal
            progress.add(3)
            progress.finish_one()
            stream.flush()
            shown = ""
            while f"{compiler.NOTICE}: 1/3" not in shown and select.select([master], [], [], 5)[0]:
                shown += os.read(master, 65536).decode()
            progress.finish_one()
            progress.finish_one()
    finally:
        os.close(master)
    assert f"{compiler.NOTICE}: 1/3" in shown


def test_forced_terminal_flag(monkeypatch):
    monkeypatch.setenv("EXCITE_PROGRESS_TTY", "1")
    stream = io.StringIO()
    progress = compiler.Progress(stream)
    progress.add(2)
    progress.finish_one()
    assert f"{compiler.NOTICE}: 1/2" in stream.getvalue()
    monkeypatch.setenv("EXCITE_PROGRESS_TTY", "0")
    assert not compiler.Progress(io.StringIO()).terminal


def test_signature_text_round_trip():
    from numba.core import types

    sig = (types.Array(types.float32, 4, "C"), types.Array(types.int64, 1, "C", readonly=True), types.int64,
           types.float64, types.boolean)
    text = compiler.format_sig(sig)
    assert text == "array(float32,4,C); array(int64,1,C,ro); int64; float64; bool"
    assert compiler.parse_sig(text) == sig
    assert compiler.format_sig((types.unicode_type,)) is None


def test_every_listed_build_names_a_kernel_and_parses():
    workloads = compiler.load_workloads()
    assert "mobilenet_v3_small_compiled" in workloads and "digits_train" in workloads
    assert (SMALL, SMALL_SIG) in workloads["mobilenet_v3_small_compiled"]
    for entries in workloads.values():
        for ident, text in entries:
            dispatcher = compiler.resolve(ident)
            assert hasattr(dispatcher, "compile"), ident
            assert compiler.format_sig(compiler.parse_sig(text)) == text


_BUILD_SMALL = f"""
import sys
from excite.kernels import compiler
ident, sig = {SMALL!r}, compiler.parse_sig({SMALL_SIG!r})
dispatcher = compiler.resolve(ident)
print("built", compiler.build(ident, dispatcher, sig), flush=True)
import numpy as np
dispatcher(np.ones(4, np.float32), np.empty(4, np.float32), 0)
print("loaded from the cache", dict(dispatcher.stats.cache_hits) == {{sig: 1}}, flush=True)
"""


def test_a_cache_miss_compiles_in_a_worker_and_says_so(tmp_path):
    out = subprocess.run([sys.executable, "-c", _BUILD_SMALL], env=_env(tmp_path, EXCITE_KERNEL_PREFETCH="0"),
                         capture_output=True, text=True, timeout=180)
    assert out.returncode == 0, out.stderr
    assert "built True" in out.stdout and "loaded from the cache True" in out.stdout
    assert out.stderr.startswith(f"excite: {compiler.NOTICE}")  # not a terminal: plain lines
    assert "excite: compiled 1 kernels in" in out.stderr


def test_ctrl_c_stops_the_wait_for_a_compiling_worker(tmp_path):
    proc = subprocess.Popen([sys.executable, "-c", _BUILD_SMALL], env=_env(tmp_path, EXCITE_KERNEL_PREFETCH="0"),
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        first = proc.stderr.readline()  # written when the build is queued, before the worker starts
        assert first.startswith(f"excite: {compiler.NOTICE}")
        time.sleep(1)  # into the wait: a compile takes longer (numba's import alone in the worker)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode != 0
    assert "KeyboardInterrupt" in err and "in wait" in err, err  # interrupted while waiting, not after
    assert "built" not in out


@pytest.mark.parametrize("value,expected", [("0", 0), ("3", 3), ("x", None)])
def test_worker_count(monkeypatch, value, expected):
    monkeypatch.setenv(compiler.WORKERS_ENV, value)
    assert compiler.max_workers() == (min(2, os.cpu_count() or 1) if expected is None else expected)


def test_the_first_miss_queues_the_workloads_that_need_it_training_first_when_expected(monkeypatch):
    workloads = {"small_compiled": [(SMALL, SMALL_SIG), (("m", "infer_only", "parallel"), "int64")],
                 "digits_train": [(SMALL, SMALL_SIG), (("m", "train_only", "parallel"), "int64")],
                 "unrelated": [(("m", "other", "parallel"), "int64")]}
    monkeypatch.setattr(compiler, "load_workloads", lambda: workloads)
    queued = []
    monkeypatch.setattr(compiler, "queue", lambda entries: queued.append([e[0][1] for e in entries]))
    sig = compiler.parse_sig(SMALL_SIG)
    for expected, order in ((None, ["activation_forward", "infer_only", "activation_forward", "train_only"]),
                            ("train", ["activation_forward", "train_only", "activation_forward", "infer_only"])):
        monkeypatch.setattr(compiler, "_prefetched", False)
        monkeypatch.setattr(compiler, "_expected", expected)
        compiler.prefetch(SMALL, sig)
        compiler.prefetch(SMALL, sig)  # once a process
        assert queued.pop() == order and not queued


def test_excite_train_stops_at_once_on_ctrl_c_while_kernels_compile(monkeypatch):
    from excite.app.train import _StopRequest

    request = _StopRequest()
    request._handle(signal.SIGINT, None)  # usually: a request to stop at the next batch
    assert request.requested
    monkeypatch.setattr(compiler, "_waiting", 1)
    with pytest.raises(KeyboardInterrupt):
        _StopRequest()._handle(signal.SIGINT, None)
