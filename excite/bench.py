"""The benchmark: excite, PyTorch and onnxruntime side by side in one run, reported as ratios.

    python -m excite.bench [--quick] [--json out.json] [--threads N] [--reps N]

Each case is timed after warm-up over several repetitions; the table shows medians and the
ratio excite/torch (below 1.0 means excite is faster). Peers are used only if installed.
Process-level cases (import time, cold first inference, peak memory) run in fresh processes.
"""
import argparse
import json
import os
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
               "infer_mobilenet_v3_small_b1", "infer_mobilenet_v3_small_b16", "import_s"}


def _median_time(fn, reps, warmup):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


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


# ----- torch side: benchmarks/torch_peer.py in its own process ----------------------------
# excite never imports torch; a separate process also keeps the two thread pools from
# competing inside one interpreter (which inflated torch's times 2-20x when interleaved).
PEER = os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "benchmarks", "torch_peer.py")


def torch_available():
    import importlib.util

    return os.path.exists(PEER) and all(importlib.util.find_spec(m) for m in ("torch", "torchvision"))


def _torch_peer(kind, *args, threads=1, reps=3, warmup=2):
    cmd = [sys.executable, PEER, kind, *map(str, args), "--threads", str(threads), "--reps", str(reps),
           "--warmup", str(warmup)]
    out = subprocess.run(cmd, capture_output=True, text=True, check=True)
    return float(out.stdout.split()[-1])


def _ort_infer(name, batch, size, threads, tmpdir):
    import excite as ex
    from excite import onnx as ex_onnx
    from excite.vision import models

    model = models.get_model(name).eval()
    path = os.path.join(tmpdir, f"{name}.onnx")
    if not os.path.exists(path):
        ex_onnx.export(model, ex.randn(1, 3, size, size), path)
    session = ex_onnx.OnnxModel(path, num_threads=threads)
    x = np.random.default_rng(0).standard_normal((batch, 3, size, size)).astype(np.float32)
    return lambda: session(x)


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


def process_cases(threads, have_torch, reps=3):
    env = dict(os.environ, EXCITE_NUM_THREADS=str(threads))
    rows = []
    rows.append(("import_s", _fresh_import("excite", reps), _fresh_import("torch", reps) if have_torch else None))
    # (the torch import above happens in a child process, never in excite's)
    _fresh(_COLD_EXCITE, env)  # make sure the on-disk kernel cache is warm
    ex_cold = statistics.median(_fresh(_COLD_EXCITE, env)[0] for _ in range(reps))
    th_cold = (statistics.median(_torch_peer("cold", threads=threads) for _ in range(reps))
               if have_torch else None)
    rows.append(("cold_first_inference_s", ex_cold, th_cold))
    ex_rss = _fresh(_COLD_EXCITE + _RSS_SUFFIX, env)[1]
    th_rss = _torch_peer("rss", threads=threads) if have_torch else None
    rows.append(("peak_rss_mb_infer_small_b1", ex_rss, th_rss))
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

    def add(case, ex_fn, th_args=None, ort_fn=None, case_reps=reps):
        ex_s = _median_time(ex_fn(), case_reps, warmup)
        th_s = (_torch_peer(*th_args, threads=threads, reps=case_reps, warmup=warmup)
                if th_args is not None and have_torch else None)
        ort_s = None
        if ort_fn is not None and have_ort:
            ort_s = _median_time(ort_fn(), case_reps, warmup)
        rows.append({"case": case, "excite_s": ex_s, "torch_s": th_s, "onnxruntime_s": ort_s})
        _print_row(rows[-1])

    print(f"excite benchmark: {threads} threads, {reps} repetitions after {warmup} warm-up, medians")
    _print_header()
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
                    lambda n=name, b=batch: _ort_infer(n, b, 224, threads, tmpdir),
                    case_reps=reps if batch == 1 else max(3, reps // 2))
    for name in TRAIN_MODELS:
        case = f"train_{name}_b16"
        if wanted(case):
            add(case, lambda n=name: _excite_train(n, 16, 224), ("train", name, 16, 224), case_reps=3)
    if any(wanted(c) for c in ("import_s", "cold_first_inference_s", "peak_rss_mb_infer_small_b1")):
        for case, ex_v, th_v in process_cases(threads, have_torch, reps=3 if not quick else 2):
            if wanted(case) or not quick:
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


def main(argv=None):
    parser = argparse.ArgumentParser(prog="excite bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="a subset that runs in under a minute")
    parser.add_argument("--json", metavar="PATH", help="write the rows as JSON to PATH")
    parser.add_argument("--threads", type=int, default=None, help="threads for every engine (default: all cores)")
    parser.add_argument("--reps", type=int, default=None, help="timed repetitions per case")
    parser.add_argument("--case", action="append", help="run only this case (repeatable)")
    args = parser.parse_args(argv)
    rows = run(quick=args.quick, threads=args.threads, reps=args.reps, cases=set(args.case) if args.case else None)
    if args.json:
        with open(args.json, "w") as f:
            json.dump(rows, f, indent=1)
        print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
