"""The benchmark's driver: excite, PyTorch and onnxruntime side by side in one run, reported as ratios.

    python -m excite.bench [--quick] [--json out.json] [--threads N] [--reps N]

Each case is warmed up in every engine, then timed in rounds in which the engines take turns (a
burst of runs each), so a busy spell on the machine hits all engines alike; the table shows medians and the ratio
excite/torch (below 1.0 means excite is faster). torch runs in a peer process
(benchmarks/torch_peer.py), so excite never imports it; peers are used only if installed.
Process-level cases (import time, cold first inference, peak memory) run in fresh processes.
"""
import argparse
import json
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np

SE_SHAPES = {"8x96x28x28": (8, 96, 28, 28), "32x240x14x14": (32, 240, 14, 14)}
INFER_MODELS = ("mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0")
TRAIN_MODELS = ("mobilenet_v3_small", "efficientnet_b0")
QUICK_CASES = {"se_fwd_8x96x28x28", "se_fwdbwd_8x96x28x28", "se_fwdbwd_32x240x14x14",
               "infer_mobilenet_v3_small_b1", "infer_mobilenet_v3_small_b16", "import_s", "cold_first_inference_s"}


ROUNDS = 3  # the timed repetitions are split into this many rounds, the engines taking turns
SETTLE_S = 0.02  # pause before each burst: an engine's idle threads spin for a few ms after its runs
# untimed runs before each burst's timed ones, for at least this long: after the pause a 2-core VM
# wakes slowly (seen here: parallel regions taking 1.2 ms instead of 0.07 ms until ~30 ms of work)
WAKE_S = 0.05


def _interleaved(engines, reps):
    """Medians of ``reps`` timed runs per engine, in ROUNDS rounds: in each round every engine runs a
    short burst (untimed runs for WAKE_S, then its share of timed runs), so a busy spell on the
    machine hits all engines alike. ``engines`` maps a name to ``burst(n)``, which returns the
    seconds of n timed runs."""
    times = {name: [] for name in engines}
    rounds = min(ROUNDS, reps)
    for r in range(rounds):
        share = reps // rounds + (r < reps % rounds)
        for name, burst in engines.items():
            time.sleep(SETTLE_S)
            times[name] += burst(share)
    return {name: statistics.median(values) for name, values in times.items()}


def _bursts(fn, warmup):
    for _ in range(warmup):
        fn()

    def burst(n, wake_s=WAKE_S):
        awake = time.perf_counter() + wake_s
        fn()
        while time.perf_counter() < awake:
            fn()
        times = []
        for _ in range(n):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return times

    return burst


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


def _excite_infer(name, batch, size):
    import excite as ex
    from excite.vision import models

    model = models.get_model(name).eval()
    x = ex.randn(batch, 3, size, size)

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
# run as a script, not with -m: the fresh-process cases (cold start, peak memory) must not import excite
PEER = [sys.executable, os.path.join(os.path.dirname(os.path.abspath(__file__)), "torch_peer.py")]


def torch_available():
    import importlib.util

    return all(importlib.util.find_spec(m) for m in ("torch", "torchvision"))


class Peer:
    """An engine in its own process, speaking `serve`'s protocol: builds a case, times bursts on request."""

    def __init__(self, cmd):
        self.proc = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True)

    def _request(self, **message):
        self.proc.stdin.write(json.dumps(message) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError(f"the benchmark peer exited (code {self.proc.wait()}) on {message}")
        reply = json.loads(line)
        if "error" in reply:
            raise RuntimeError(f"benchmark peer: {reply['error']}")
        return reply

    def setup(self, kind, args, warmup):
        self._request(op="setup", kind=kind, args=[str(a) for a in args], warmup=warmup)

    def burst(self, n):
        return self._request(op="time", runs=n, wake_s=WAKE_S)["s"]

    def release(self):
        self._request(op="release")

    def close(self):
        if self.proc.poll() is None:
            self.proc.stdin.write(json.dumps({"op": "exit"}) + "\n")
            self.proc.stdin.close()
            self.proc.wait()


def serve(build, lines=None, reply=None):
    """The peer side: JSON requests, one per line, each answered by one JSON line.

    ``{"op": "setup", "kind": ..., "args": [...], "warmup": W}`` calls ``build(kind, args)`` for a
    function that runs the case once, then runs it W times; ``{"op": "time", "runs": n, "wake_s": s}``
    runs it untimed for s seconds (once at least), then n timed times, and answers
    ``{"s": [seconds, ...]}``; ``{"op": "release"}`` drops it; ``{"op": "exit"}`` ends the loop.
    """
    lines = sys.stdin if lines is None else lines
    reply = reply or (lambda message: print(json.dumps(message), flush=True))
    run = None
    for line in lines:
        request = json.loads(line)
        op = request["op"]
        if op == "exit":
            return
        try:
            if op == "setup":
                run = build(request["kind"], request["args"])
                for _ in range(request.get("warmup", 2)):
                    run()
                reply({"ok": True})
            elif op == "time":
                reply({"s": _bursts(run, 0)(request.get("runs", 1), request.get("wake_s", 0.0))})
            elif op == "release":
                run = None
                reply({"ok": True})
            else:
                reply({"error": f"unknown op {op!r}"})
        except Exception as e:  # noqa: BLE001  (reported to the benchmark, which raises it)
            reply({"error": f"{type(e).__name__}: {e}"})


def _serve_onnxruntime(threads):
    from excite.onnx import OnnxModel

    def build(kind, args):
        path, batch, size = args[0], int(args[1]), int(args[2])
        session = OnnxModel(path, num_threads=threads)
        x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
        return lambda: session(x)

    serve(build)


def _torch_once(mode, threads):
    """A fresh-process case of the peer (``cold`` seconds or ``rss`` MB)."""
    cmd = [*PEER, mode, "--threads", str(threads)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def _onnx_file(name, size, tmpdir):
    """The model exported to ONNX (once per run), for the onnxruntime peer."""
    import excite as ex
    from excite import onnx as ex_onnx
    from excite.vision import models

    path = os.path.join(tmpdir, f"{name}.onnx")
    if not os.path.exists(path):
        ex_onnx.export(models.get_model(name).eval(), ex.randn(1, 3, size, size), path)
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


def process_cases(threads, have_torch, wanted, reps=3):
    """The fresh-process cases ``wanted(case)`` selects, as (case, excite value, torch value) rows."""
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
    if wanted("first_ever_inference_s"):
        with tempfile.TemporaryDirectory() as cache:
            first = _fresh(_COLD_EXCITE, dict(env, NUMBA_CACHE_DIR=cache))[0]
        rows.append(("first_ever_inference_s", first, None))
    return rows


# ----- driver -----------------------------------------------------------------------------
def run(quick=False, threads=None, reps=None, warmup=2, cases=None):
    threads = threads or int(os.environ.get("EXCITE_NUM_THREADS", os.cpu_count() or 1))
    os.environ["EXCITE_NUM_THREADS"] = str(threads)
    have_torch = torch_available()
    have_ort = _try_import("onnxruntime") is not None and _try_import("onnx") is not None
    reps = reps or (5 if quick else 7)
    import excite as ex

    ex.manual_seed(0)
    wanted = (lambda name: (not quick or name in QUICK_CASES) and (cases is None or name in cases))
    rows = []
    tmpdir = tempfile.mkdtemp(prefix="excite-bench-")
    # the peers run in processes of their own: excite never imports torch, and an idle engine's
    # threads (onnxruntime's spin) cannot slow the one being timed
    peers = {}
    if have_torch:
        peers["torch"] = Peer([*PEER, "serve", "--threads", str(threads)])
    if have_ort:
        peers["onnxruntime"] = Peer([sys.executable, "-m", "excite.bench", "--serve-onnxruntime",
                                     "--threads", str(threads)])

    def add(case, ex_fn, th_args=None, ort_args=None, case_reps=reps):
        engines = {"excite": _bursts(ex_fn(), warmup)}
        for name, args in (("torch", th_args), ("onnxruntime", ort_args)):
            if args is None or name not in peers:
                continue
            if callable(args):
                args = args()  # the ONNX export, only when its peer runs
            peers[name].setup(args[0], args[1:], warmup)
            engines[name] = peers[name].burst
        medians = _interleaved(engines, case_reps)
        for name in engines:
            if name in peers:
                peers[name].release()
        rows.append({"case": case, "excite_s": medians["excite"], "torch_s": medians.get("torch"),
                     "onnxruntime_s": medians.get("onnxruntime")})
        _print_row(rows[-1])

    print(f"excite benchmark: {threads} threads, {reps} repetitions after {warmup} warm-up in {ROUNDS} alternating "
          f"rounds, medians")
    _print_header()
    try:
        for label, shape in SE_SHAPES.items():
            for bwd in (False, True):
                case = f"se_{'fwdbwd' if bwd else 'fwd'}_{label}"
                if wanted(case):
                    add(case, lambda s=shape, b=bwd: _excite_se(s, b)[1], ("se", label, int(bwd)))
        for name in INFER_MODELS:
            for batch in (1, 16):
                case = f"infer_{name}_b{batch}"
                if wanted(case):
                    add(case, lambda n=name, b=batch: _excite_infer(n, b, 224), ("infer", name, batch, 224),
                        lambda n=name, b=batch: ("onnx", _onnx_file(n, 224, tmpdir), b, 224),
                        case_reps=reps if batch == 1 else max(3, reps - 2))
        for name in TRAIN_MODELS:
            case = f"train_{name}_b16"
            if wanted(case):
                add(case, lambda n=name: _excite_train(n, 16, 224), ("train", name, 16, 224), case_reps=max(3, reps - 2))
    finally:
        for peer in peers.values():
            peer.close()
        shutil.rmtree(tmpdir, ignore_errors=True)
    for case, ex_v, th_v in process_cases(threads, have_torch, wanted, reps=2 if quick else 3):
        rows.append({"case": case, "excite_s": ex_v, "torch_s": th_v, "onnxruntime_s": None})
        _print_row(rows[-1])
    return rows


def _fmt(v, case):
    if v is None:
        return "-"
    if case.startswith("peak_rss"):
        return f"{v:.0f} MB"
    return f"{v * 1000:.1f} ms" if v < 10 else f"{v:.1f} s"


def _print_header():
    print(f"{'case':34s} {'excite':>11s} {'torch':>11s} {'onnxrt':>11s} {'excite/torch':>13s}")


def _print_row(r):
    ratio = f"{r['excite_s'] / r['torch_s']:.2f}" if r["torch_s"] else "-"
    case = r["case"]
    print(f"{case:34s} {_fmt(r['excite_s'], case):>11s} {_fmt(r['torch_s'], case):>11s} "
          f"{_fmt(r['onnxruntime_s'], case):>11s} {ratio:>13s}", flush=True)


def _known_cases():
    """Every case name the benchmark can run (what --case accepts)."""
    names = [f"se_{kind}_{label}" for label in SE_SHAPES for kind in ("fwd", "fwdbwd")]
    names += [f"infer_{name}_b{batch}" for name in INFER_MODELS for batch in (1, 16)]
    names += [f"train_{name}_b16" for name in TRAIN_MODELS]
    process_cases(1, False, lambda name: names.append(name) and False)  # only asks which cases it has
    return names


def main(argv=None):
    from ..cli import _integer, _Parser

    parser = _Parser(prog="excite bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a subset that runs in under a minute")
    parser.add_argument("--json", metavar="PATH", help="write the rows as JSON to PATH")
    parser.add_argument("--threads", metavar="N", type=_integer(1), default=None,
                        help="threads for every engine (default: all cores)")
    parser.add_argument("--reps", metavar="N", type=_integer(1), default=None, help="timed repetitions per case")
    parser.add_argument("--case", metavar="NAME", action="append", help="run only this case (repeatable)")
    parser.add_argument("--serve-onnxruntime", action="store_true", help=argparse.SUPPRESS)  # the onnxruntime peer
    args = parser.parse_args(argv)
    if args.serve_onnxruntime:
        _serve_onnxruntime(args.threads)
        return 0
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
