"""Compiled kernels under threads: concurrent Python threads, EXCITE_NUM_THREADS, the workqueue layer, fork.

Results must not depend on the thread count or on concurrency (fixed work partition, fixed
summation order). Budget: about 15 s with a warm numba cache (it starts four subprocesses).
"""
import hashlib
import os
import subprocess
import sys
import threading

import numpy as np
import pytest

from excite.kernels import activation as A
from excite.kernels import blas, threads
from excite.kernels import conv as K
from excite.kernels import norm as N
from excite.kernels import se as S
from excite.kernels.fused import conv_bn_act_inference
from excite.kernels.layout import is_channels_last

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def run_everything_in_parallel(setattr=setattr):
    """Small as the workload's kernels (and products) are, run them on every thread; ``setattr`` is
    monkeypatch's in this process (undone after each test), the builtin in the subprocesses."""
    setattr(threads, "PARALLEL_MIN_NS", 0)
    setattr(blas, "MIN_PARALLEL_FLOPS", 0)


@pytest.fixture(autouse=True)
def _parallel(monkeypatch):
    run_everything_in_parallel(monkeypatch.setattr)


def workload(seed=0):
    """Every compiled kernel family once, each split across threads; returns the results."""
    rng = np.random.default_rng(seed)
    x = np.ascontiguousarray(rng.standard_normal((3, 13, 17, 32)).astype(np.float32)).transpose(0, 3, 1, 2)
    w = rng.standard_normal((32, 1, 3, 3)).astype(np.float32)
    y = K.conv2d_forward(x, w, None, (2, 2), (1, 1), (1, 1), 32)
    g = np.ones_like(y)
    gx = K.conv2d_backward_input(g, x.shape, w, (2, 2), (1, 1), (1, 1), 32)
    gw = K.conv2d_backward_weight(g, x, w.shape, (2, 2), (1, 1), (1, 1), 32)
    z, mean, var, scale, shift, invstd = N.batch_norm_train(gx, None, None, 1e-5, "hardswish")
    bx, bw, bb = N.batch_norm_backward(z, gx, scale, shift, mean, invstd, None, True, "hardswish")
    w1 = rng.standard_normal((64, 32, 1, 1)).astype(np.float32)
    p = K.conv2d_forward(bx, w1, None, (1, 1), (0, 0), (1, 1), 1)
    pw = K.conv2d_backward_weight(p, bx, w1.shape, (1, 1), (0, 0), (1, 1), 1)
    px = K.conv2d_backward_input(p, bx.shape, w1, (1, 1), (0, 0), (1, 1), 1)
    # grouped (RegNet's group width 8), stride 2: forward, input gradient (spread out) and weight gradient
    wg = rng.standard_normal((64, 8, 3, 3)).astype(np.float32)
    q = K.conv2d_forward(p, wg, None, (2, 2), (1, 1), (1, 1), 8)
    qx = K.conv2d_backward_input(q, p.shape, wg, (2, 2), (1, 1), (1, 1), 8)
    qw = K.conv2d_backward_weight(q, p, wg.shape, (2, 2), (1, 1), (1, 1), 8)
    return [y, gx, gw, z, mean, var, bx, bw, A.forward(bx, "silu"), A.backward(bx, A.forward(bx, "sigmoid"), "sigmoid"), p, pw, px,
            q, qx, qw,
            *inference_workload(rng)]


def _channels_last(shape, rng):
    n, c, h, w = shape
    return np.ascontiguousarray(rng.standard_normal((n, h, w, c)).astype(np.float32)).transpose(0, 3, 1, 2)


def inference_workload(rng):
    """The fused inference kernels: both matrix-product tiles with the residual, the implicit dense
    convolution, depthwise rows read in place (wide) and from a padded band (narrow), grouped, SE, and
    a product bound to its arrays."""
    def norm(c):
        return (rng.standard_normal(c).astype(np.float32), rng.uniform(0.5, 2, c).astype(np.float32),
                rng.standard_normal(c).astype(np.float32), rng.standard_normal(c).astype(np.float32), 1e-3)

    out = []
    for shape, o, k, stride, groups in (((1, 96, 7, 7), 24, 1, 1, 1),  # few rows: dot tiles
                                        ((2, 24, 30, 31), 40, 1, 1, 1),  # broadcast tiles
                                        ((2, 3, 35, 33), 16, 3, 2, 1),  # the stem
                                        ((1, 40, 36, 40), 40, 3, 1, 40),  # depthwise, wide
                                        ((1, 24, 70, 68), 24, 5, 2, 24),  # depthwise, wide, stride 2
                                        ((2, 56, 14, 14), 56, 5, 1, 56),  # depthwise, narrow
                                        ((2, 48, 15, 13), 48, 3, 2, 6)):  # grouped
        x = _channels_last(shape, rng)
        w = rng.standard_normal((o, shape[1] // groups, k, k)).astype(np.float32)
        pad = (k // 2, k // 2)
        y = conv_bn_act_inference(x, w, None, (stride, stride), pad, (1, 1), groups, norm(o), "hardswish")
        out.append(y)
        if k == 1:
            out.append(conv_bn_act_inference(x, w, None, (1, 1), pad, (1, 1), 1, norm(o), None, residual=y))
    x = _channels_last((3, 64, 13, 17), rng)
    w1, w2 = rng.standard_normal((16, 64, 1, 1)).astype(np.float32), rng.standard_normal((64, 16, 1, 1)).astype(np.float32)
    out.append(S.se_inference(x, w1, rng.standard_normal(16).astype(np.float32), w2,
                              rng.standard_normal(64).astype(np.float32), "relu", "hardsigmoid"))
    # a product bound to its arrays, as a compiled graph runs it: the first call goes through numba's
    # dispatcher, the second straight to the compiled entry point (`threads.BoundKernel`)
    plan, x, target = _bound_product(rng)
    call = plan.bind(x, target)
    for _ in range(2):
        target[...] = np.nan
        call()
        out.append(target.copy())
    return out


def _bound_product(rng):
    x = _channels_last((2, 24, 9, 11), rng)
    w = rng.standard_normal((40, 24, 1, 1)).astype(np.float32)
    plan = K.Conv2dPlan(x.shape, np.float32, True, w, None, (1, 1), (0, 0), (1, 1), 1, None, None, "relu")
    return plan, x, np.empty((2, 9, 11, 40), np.float32)


def digest(arrays):
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


_SCRIPT = """
import sys, threading
sys.path.insert(0, {tests!r})
from test_kernels_threads import digest, run_everything_in_parallel, workload
run_everything_in_parallel()
results = [None] * 8
def run(i):
    results[i] = digest(workload())
threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
for t in threads: t.start()
for t in threads: t.join()
assert len(set(results)) == 1, results
print(results[0])
"""


def _run(env_extra, code=None):
    env = dict(os.environ, **env_extra)
    code = code or _SCRIPT.format(tests=os.path.join(ROOT, "tests"))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=600,
                         cwd=ROOT)
    assert out.returncode == 0, out.stderr[-3000:]
    return out.stdout.split()[-1]


def test_workload_is_channels_last():
    assert is_channels_last(workload()[0])


def test_eight_python_threads_at_once_give_identical_results():
    expected = digest(workload())
    results = [None] * 8
    errors = []

    def run(i):
        try:
            results[i] = digest(workload())
        except Exception as e:  # noqa: BLE001  (reported below)
            errors.append(e)

    threads = [threading.Thread(target=run, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    assert results == [expected] * 8


def test_results_do_not_depend_on_the_thread_count_or_threading_layer():
    """The compiled kernels split work the same way for any thread count (the matrix products too:
    each output is one sum whatever the tiling, the weight gradient sums over fixed chunks)."""
    here = digest(workload())
    assert _run({"EXCITE_NUM_THREADS": "1"}) == here
    assert _run({"EXCITE_NUM_THREADS": "2"}) == here
    # numba's workqueue layer is not thread-safe: parallel launches are serialised, others run serially
    assert _run({"EXCITE_NUM_THREADS": "2", "NUMBA_THREADING_LAYER": "workqueue"}) == digest(workload())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX-only")
def test_kernels_work_in_a_child_forked_after_parallel_use():
    code = """
import os, sys
sys.path.insert(0, {tests!r})
from test_kernels_threads import digest, run_everything_in_parallel, workload
run_everything_in_parallel()
parent = digest(workload())
pid = os.fork()
if pid == 0:
    os._exit(0 if digest(workload()) == parent else 3)
_, status = os.waitpid(pid, 0)
assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
print(parent)
""".format(tests=os.path.join(ROOT, "tests"))
    assert _run({"EXCITE_NUM_THREADS": "2"}, code) == digest(workload())


def test_a_bound_kernel_goes_to_the_compiled_entry_point_once_it_has_run():
    plan, x, target = _bound_product(np.random.default_rng(5))
    expected = np.ascontiguousarray(plan(x).transpose(0, 2, 3, 1))
    call = plan.bind(x, target)
    assert isinstance(call, threads.BoundKernel) and call._entry is None
    for _ in range(2):
        target[...] = np.nan
        call()
        np.testing.assert_array_equal(target, expected)
    # resolved after the first call (the workqueue layer: below)
    assert callable(call._entry) or threads.configured().needs_lock

    def refuse(*args):
        raise AssertionError("the compiled entry point ran while the NumPy tier was on")

    call._entry = refuse
    previous = threads.use_numpy_tier(True)
    try:
        target[...] = np.nan
        call()  # the twin
    finally:
        threads.use_numpy_tier(previous)
    np.testing.assert_allclose(target, expected, rtol=1e-5, atol=1e-5)


def test_a_bound_kernel_keeps_the_usual_way_on_the_workqueue_layer():
    """Its parallel launches take excite's lock: the bound call never resolves, and says so once (it
    does not look the entry point up again on every call)."""
    code = """
import sys
import numpy as np
sys.path.insert(0, {tests!r})
from test_kernels_threads import _bound_product
plan, x, target = _bound_product(np.random.default_rng(5))
call = plan.bind(x, target)
call(); call()
print(call._entry is False)
""".format(tests=os.path.join(ROOT, "tests"))
    assert _run({"NUMBA_THREADING_LAYER": "workqueue"}, code) == "True"


def test_import_excite_does_not_import_numba():
    code = "import sys, excite, excite.nn, excite.vision.models; print(int('numba' in sys.modules))"
    assert _run({}, code) == "0"
