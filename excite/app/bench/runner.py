"""The benchmark's driver: excite and the engines users pick instead, side by side in one run, as ratios.

    python -m excite.bench [--quick] [--json out.json] [--threads N] [--reps N] [--case NAME]

Inference cases run excite compiled (`excite.compile`, the ``excite`` column) and eager, torch
eager, torch channels-last under ``inference_mode``, torch frozen TorchScript, onnxruntime and
OpenVINO (on torch's ONNX export); the SE and training cases excite eager and torch eager; the compile
cases the time `excite.compile` itself takes (no peer). Each case is warmed up in every engine, then
timed in rounds in which the engines take turns (a burst of runs each, `protocol.BURST_S` seconds of
timed runs at least), so a busy spell on the machine hits all engines alike; the table shows medians and
the ratios excite/torch and excite/best peer (below 1.0 means excite is faster). Every peer runs in a process of its own (`protocol`), so excite never
imports torch; peers are used only if installed. Process-level cases (import time, cold first inference, peak memory, and the first-ever
inference and training step, with an empty kernel cache in a fresh $EXCITE_HOME) run in fresh
processes. The distributed case (`distributed`, only with ``--case`` or a full run) trains on 1 and 2
MPI ranks and reports images/s and the scaling efficiency. `TRAIN_RUN_CASES` (only with ``--case``: they
take minutes) time a whole default ``excite train`` on an empty kernel cache and on a warm one.
"""
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

from . import distributed
from .protocol import BURST_S, ROUNDS, Peer, bursts, interleaved

SE_SHAPES = {"8x96x28x28": (8, 96, 28, 28), "32x240x14x14": (32, 240, 14, 14)}
INFER_MODELS = ("mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "regnet_y_400mf", "regnet_y_1_6gf")
TRAIN_MODELS = ("mobilenet_v3_small", "efficientnet_b0", "regnet_y_400mf")
COMPILE_MODELS = ("mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0")  # excite.compile's own time
QUICK_CASES = {"se_fwd_8x96x28x28", "se_fwdbwd_8x96x28x28", "se_fwdbwd_32x240x14x14",
               "infer_mobilenet_v3_small_b1", "infer_mobilenet_v3_small_b16", "import_s", "cold_first_inference_s"}


def _try_import(name):
    try:
        return __import__(name)
    except ImportError:
        return None


# ----- excite side ------------------------------------------------------------------------
def _excite_se(shape, backward):
    import excite as ex
    import excite.nn as nn

    c = shape[1]
    se = nn.SqueezeExcitation(c, max(1, c // 4))
    x = ex.randn(*shape, requires_grad=backward)

    def run():
        if backward:
            out = se(x)
            out.backward(ex.ones_like(out))
        else:
            with ex.no_grad():
                se(x)

    return se, run


def _compile_seconds(name, reps):
    """Median seconds of ``excite.compile(model, x)`` at batch 1, 224x224 (capture, passes, kernel plans), the
    kernels already built: the first call compiles once untimed."""
    import excite as ex
    from excite.vision import models

    model = models.get_model(name).eval()
    x = ex.randn(1, 3, 224, 224)
    ex.compile(model, x)(x)
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        ex.compile(model, x)
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


def _excite_infer(name, batch, size, compiled=True):
    import excite as ex
    from excite.vision import models

    model = models.get_model(name).eval()
    x = ex.randn(batch, 3, size, size)
    if compiled:
        run = ex.compile(model, x)
        return lambda: run(x)

    def run():
        with ex.no_grad():
            model(x)

    return run


def _excite_train(name, batch, size):
    import excite as ex
    import excite.nn.functional as F
    from excite import optim
    from excite.vision import models

    model = models.get_model(name).train()
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = ex.randn(batch, 3, size, size)
    y = ex.tensor(np.arange(batch) % 1000)

    def run():
        opt.zero_grad()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        opt.step()

    return run


# ----- torch side: `torch_peer` in its own process --------------------------------------------
# excite never imports torch; a separate process also keeps the two thread pools from
# competing inside one interpreter (which inflated torch's times 2-20x when interleaved).
# run as a script, not with -m: the fresh-process cases (cold start, peak memory) must not import excite.
# It lives in the source tree's benchmarks/, outside the package (nothing installed with excite imports
# torch), so the torch columns need a source checkout; without one they are "-".
PEER_SCRIPT = os.path.join(os.path.dirname(os.path.abspath(__file__)), *[os.pardir] * 3, "benchmarks", "torch_peer.py")
PEER = [sys.executable, os.path.normpath(PEER_SCRIPT)]


def torch_available():
    import importlib.util

    return os.path.exists(PEER[1]) and all(importlib.util.find_spec(m) for m in ("torch", "torchvision"))


def _torch_once(mode, threads):
    """A fresh-process case of the peer (``cold`` seconds or ``rss`` MB)."""
    cmd = [*PEER, mode, "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def _onnx_file(torch_peer, name, size, tmpdir):
    """torchvision's model exported by torch to ONNX (once per run), for the onnxruntime and OpenVINO peers."""
    path = os.path.join(tmpdir, f"{name}-{size}.onnx")
    if not os.path.exists(path):
        torch_peer.setup("export_onnx", (name, size, path), 0)
        torch_peer.release()
    return path


# ----- fresh-process cases ----------------------------------------------------------------
_COLD_EXCITE = """
import time; t0 = time.perf_counter()
import excite as ex
from excite.vision import models
m = models.mobilenet_v3_small().eval()
with ex.no_grad():
    m(ex.randn(1, 3, 224, 224))
print(time.perf_counter() - t0)
"""
# one step of `excite train`'s default run: the digits network, a batch of 64 at 32x32, AdamW
_TRAIN_STEP_EXCITE = """
import time; t0 = time.perf_counter()
import numpy as np
import excite as ex
import excite.nn.functional as F
from excite import optim
from excite.vision import models
m = models.get_model("mobilenet_v3_digits").train()
opt = optim.AdamW(m.parameters(), lr=0.01)
loss = F.cross_entropy(m(ex.randn(64, 3, 32, 32)), ex.tensor(np.arange(64) % 10))
loss.backward()
opt.step()
print(time.perf_counter() - t0)
"""
# a whole default `excite train` (the digits network, 10 epochs), first ever (an empty kernel cache) and
# warm: with --case only
TRAIN_RUN_CASES = ("first_ever_train_run_s", "train_run_s")
# VmHWM, not ru_maxrss: Linux carries ru_maxrss across fork+exec, so a child started by this
# (large) process would report the parent's peak
_RSS_SUFFIX = """
with open("/proc/self/status") as f:
    print(next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024)
"""


def _fresh(code, env=None):
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    return [float(v) for v in out.stdout.split()]


def _fresh_import(module, reps):
    code = f"import time; t0 = time.perf_counter(); import {module}; print(time.perf_counter() - t0)"
    return statistics.median(_fresh(code)[0] for _ in range(reps))


def _train_run(env):
    """Seconds of a default ``excite train`` in a fresh process (its run directory thrown away)."""
    with tempfile.TemporaryDirectory() as out:
        start = time.perf_counter()
        subprocess.run([sys.executable, "-m", "excite", "train", "--no-progress", "--out", os.path.join(out, "run")],
                       capture_output=True, env=env, check=True)
        return time.perf_counter() - start


def process_cases(threads, have_torch, wanted, reps=3, named=()):
    """The fresh-process cases ``wanted(case)`` selects, as (case, excite value, torch value) rows
    (`TRAIN_RUN_CASES` only when ``named``)."""
    env = dict(os.environ, EXCITE_NUM_THREADS=str(threads))
    rows = []
    if wanted("import_s"):
        # (the torch import happens in a child process, never in excite's)
        rows.append(("import_s", _fresh_import("excite", reps), _fresh_import("torch", reps) if have_torch else None))
    if wanted("cold_first_inference_s"):
        _fresh(_COLD_EXCITE, env)  # make sure the on-disk kernel cache is warm
        ex_cold = statistics.median(_fresh(_COLD_EXCITE, env)[0] for _ in range(reps))
        th_cold = statistics.median(_torch_once("cold", threads) for _ in range(reps)) if have_torch else None
        rows.append(("cold_first_inference_s", ex_cold, th_cold))
    if wanted("peak_rss_mb_infer_small_b1"):
        ex_rss = _fresh(_COLD_EXCITE + _RSS_SUFFIX, env)[1]
        rows.append(("peak_rss_mb_infer_small_b1", ex_rss, _torch_once("rss", threads) if have_torch else None))
    # first ever: an empty kernel cache, as on a fresh install (a fresh $EXCITE_HOME, which holds it)
    fresh_env = {k: v for k, v in env.items() if k != "NUMBA_CACHE_DIR"}
    for case, code in (("first_ever_inference_s", _COLD_EXCITE), ("first_ever_train_step_s", _TRAIN_STEP_EXCITE)):
        if wanted(case):
            with tempfile.TemporaryDirectory() as home:
                rows.append((case, _fresh(code, dict(fresh_env, EXCITE_HOME=home))[0], None))
    if set(TRAIN_RUN_CASES) & set(named):
        with tempfile.TemporaryDirectory() as home:
            first = _train_run(dict(fresh_env, EXCITE_HOME=home))
            warm = _train_run(dict(fresh_env, EXCITE_HOME=home))
        rows += [(TRAIN_RUN_CASES[0], first, None), (TRAIN_RUN_CASES[1], warm, None)]
    return rows


# ----- driver -----------------------------------------------------------------------------
PEERS = {  # engine -> (module it needs, command)
    "onnxruntime": ("onnxruntime", [sys.executable, "-m", "excite.app.bench.peers", "onnxruntime"]),
    "openvino": ("openvino", [sys.executable, "-m", "excite.app.bench.peers", "openvino"]),
}
TORCH_MODES = {"torch": "eager", "torch_channels_last": "channels_last", "torchscript": "torchscript"}
ENGINES = ("excite", "excite_eager", *TORCH_MODES, *PEERS)  # the columns of a row, in order


def run(quick=False, threads=None, reps=None, warmup=2, cases=None):
    threads = threads or int(os.environ.get("EXCITE_NUM_THREADS", os.cpu_count() or 1))
    os.environ["EXCITE_NUM_THREADS"] = str(threads)
    have_torch = torch_available()
    reps = reps or (5 if quick else 7)
    burst_s = BURST_S / 4 if quick else BURST_S  # --quick (fewer, shorter rounds) stays under a minute
    import excite as ex

    ex.manual_seed(0)
    wanted = (lambda name: (not quick or name in QUICK_CASES) and (cases is None or name in cases))
    rows = []
    tmpdir = tempfile.mkdtemp(prefix="excite-bench-")
    # the peers run in processes of their own: excite never imports torch, and an idle engine's
    # threads (onnxruntime's spin) cannot slow the one being timed
    peers = {}
    if have_torch:
        for engine in TORCH_MODES:  # one process per mode: a peer holds one case at a time
            peers[engine] = Peer([*PEER, "serve", "--threads", str(threads)])
        for engine, (module, command) in PEERS.items():  # they run torch's ONNX export
            if _try_import(module) is not None:
                peers[engine] = Peer([*command, "--threads", str(threads)])

    def add(case, excite, others, case_reps=reps):
        """Time ``excite`` ({engine: () -> run function}) and the peers in ``others`` ({engine: case
        args, or a function giving them}) in alternating rounds."""
        engines = {name: bursts(make(), warmup) for name, make in excite.items()}
        # the ONNX export (by the torch peer), only when its peers run, and before any peer holds a case
        others = {name: args() if callable(args) else args for name, args in others.items() if name in peers}
        for name, args in others.items():
            peers[name].setup(args[0], args[1:], warmup)
            engines[name] = peers[name].burst
        medians = interleaved(engines, case_reps, burst_s)
        for name in engines:
            if name in peers:
                peers[name].release()
        rows.append({"case": case, **{f"{e}_s": medians.get(e) for e in ENGINES}})
        _print_row(rows[-1])

    print(f"excite benchmark: {threads} threads; after {warmup} warm-up runs the engines take turns in up to {ROUNDS} "
          f"rounds, each engine timing {burst_s:g} s of runs per round (one run at least); medians")
    _print_header()
    try:
        for label, shape in SE_SHAPES.items():
            for bwd in (False, True):
                case = f"se_{'fwdbwd' if bwd else 'fwd'}_{label}"
                if wanted(case):
                    add(case, {"excite_eager": lambda s=shape, b=bwd: _excite_se(s, b)[1]},
                        {"torch": ("se", label, int(bwd))})
        for name in INFER_MODELS:
            for batch in (1, 16):
                case = f"infer_{name}_b{batch}"
                if wanted(case):
                    others = {engine: ("infer", name, batch, 224, mode) for engine, mode in TORCH_MODES.items()}
                    for engine in PEERS:
                        others[engine] = lambda n=name, b=batch: ("onnx", _onnx_file(peers["torch"], n, 224, tmpdir),
                                                                 b, 224)
                    add(case, {"excite": lambda n=name, b=batch: _excite_infer(n, b, 224),
                               "excite_eager": lambda n=name, b=batch: _excite_infer(n, b, 224, compiled=False)},
                        others, case_reps=reps if quick else max(ROUNDS, reps))
        for name in COMPILE_MODELS:
            case = f"compile_{name}_s"
            if wanted(case):
                rows.append({"case": case, **{f"{e}_s": None for e in ENGINES}, "excite_s": _compile_seconds(name, reps)})
                _print_row(rows[-1])
        for name in TRAIN_MODELS:
            case = f"train_{name}_b16"
            if wanted(case):
                add(case, {"excite_eager": lambda n=name: _excite_train(n, 16, 224)},
                    {"torch": ("train", name, 16, 224)}, case_reps=max(3, reps - 2))
        if wanted(distributed.CASE):
            _distributed_row(rows, threads, max(3, reps - 2))
    finally:
        for peer in peers.values():
            peer.close()
        shutil.rmtree(tmpdir, ignore_errors=True)
    for case, ex_v, th_v in process_cases(threads, have_torch, wanted, reps=2 if quick else 3, named=cases or ()):
        rows.append({"case": case, "excite_s": ex_v, **{f"{e}_s": None for e in ENGINES[1:]}, "torch_s": th_v})
        _print_row(rows[-1])
    return rows


def _distributed_row(rows, threads, reps):
    """Data-parallel training throughput at 1 and 2 MPI ranks (`distributed`); skipped without mpiexec."""
    from ..launch import find_mpiexec

    if find_mpiexec() is None or _try_import("mpi4py") is None:
        print(f"{distributed.CASE:32s}skipped: needs mpi4py and mpiexec (pip install \"excite[distributed]\")")
        return
    row = {**{f"{e}_s": None for e in ENGINES}, **distributed.row(threads, reps)}
    rows.append(row)
    print(f"{row['case']:32s}{_fmt(row['excite_s'], row['case']):>10s} a step at 1 rank; images/s: "
          f"{row['images_per_s_1_rank']:.1f} at 1 rank, {row['images_per_s_2_ranks']:.1f} at 2 ranks (batch "
          f"{distributed.BATCH} each), scaling efficiency {row['scaling_efficiency']:.2f}", flush=True)


def _fmt(v, case):
    if v is None:
        return "-"
    if case.startswith("peak_rss"):
        return f"{v:.0f} MB"
    return f"{v * 1000:.2f} ms" if v < 0.01 else (f"{v * 1000:.1f} ms" if v < 10 else f"{v:.1f} s")


_COLUMNS = {"excite": "excite", "excite_eager": "ex-eager", "torch": "torch", "torch_channels_last": "torch-cl",
            "torchscript": "tscript", "onnxruntime": "onnxrt", "openvino": "openvino"}


def best_peer(row):
    """(engine, seconds) of the fastest engine other than excite in ``row``, or None."""
    times = [(row.get(f"{e}_s"), e) for e in ENGINES if not e.startswith("excite") and row.get(f"{e}_s")]
    return min(times)[::-1] if times else None


def _print_header():
    print(f"{'case':32s}" + "".join(f"{c:>10s}" for c in _COLUMNS.values()) + f"{'ex/torch':>10s}{'ex/best':>9s}")


def _print_row(r):
    case = r["case"]
    mine = r["excite_s"] if r["excite_s"] is not None else r["excite_eager_s"]
    ratio = f"{mine / r['torch_s']:.2f}" if r["torch_s"] and mine else "-"
    best = best_peer(r)
    vs_best = f"{mine / best[1]:.2f}" if best and mine and not case.startswith(("import", "cold", "peak")) else "-"
    print(f"{case:32s}" + "".join(f"{_fmt(r.get(f'{e}_s'), case):>10s}" for e in _COLUMNS) + f"{ratio:>10s}"
          f"{vs_best:>9s}", flush=True)


def _known_cases():
    """Every case name the benchmark can run (what --case accepts)."""
    names = [f"se_{kind}_{label}" for label in SE_SHAPES for kind in ("fwd", "fwdbwd")]
    names += [f"infer_{name}_b{batch}" for name in INFER_MODELS for batch in (1, 16)]
    names += [f"compile_{name}_s" for name in COMPILE_MODELS]
    names += [f"train_{name}_b16" for name in TRAIN_MODELS]
    names.append(distributed.CASE)
    names += TRAIN_RUN_CASES
    process_cases(1, False, lambda name: names.append(name) and False)  # only asks which cases it has
    return names


def main(argv=None):
    from ..cli_base import _integer, _Parser

    parser = _Parser(prog="excite bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a subset that runs in under a minute")
    parser.add_argument("--json", metavar="PATH", help="write the rows as JSON to PATH")
    parser.add_argument("--threads", metavar="N", type=_integer(1), default=None,
                        help="threads for every engine (default: all cores)")
    parser.add_argument("--reps", metavar="N", type=_integer(1), default=None,
                        help="timed repetitions per case, at least (each round also times %g s of runs)" % BURST_S)
    parser.add_argument("--case", metavar="NAME", action="append", help="run only this case (repeatable)")
    args = parser.parse_args(argv)
    if args.case:
        known = _known_cases()
        unknown = [c for c in args.case if c not in known]
        if unknown:
            parser.error(f"argument --case: unknown case {', '.join(map(repr, unknown))}; cases: {', '.join(known)}")
        if args.quick and not set(args.case) & QUICK_CASES:
            parser.error("argument --case: none of the cases given is in the --quick subset; drop --quick")
    if args.json and not os.path.isdir(os.path.dirname(os.path.abspath(args.json))):
        parser.error(f"argument --json: no such directory: {os.path.dirname(args.json)}")
    rows = run(quick=args.quick, threads=args.threads, reps=args.reps, cases=set(args.case) if args.case else None)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
