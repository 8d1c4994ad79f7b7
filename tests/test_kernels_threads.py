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
from excite.kernels.layout import is_channels_last

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def workload(seed=0):
    """Every compiled kernel family once, each split across threads; returns the results."""
    threads.PARALLEL_MIN_NS = 0  # small as they are, run every kernel (and product) in parallel
    blas.MIN_PARALLEL_FLOPS = 0
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
    return [y, gx, gw, z, mean, var, bx, bw, A.silu(bx), A.sigmoid_backward(bx, A.sigmoid(bx)), p, pw]


def digest(arrays):
    h = hashlib.sha256()
    for a in arrays:
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()


_SCRIPT = """
import sys, threading
sys.path.insert(0, {tests!r})
from test_kernels_threads import digest, workload
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
    """The compiled kernels split work the same way for any thread count. (BLAS products are
    split into one block per thread, and the BLAS may round a block differently: not compared.)"""
    here = digest(workload()[:-2])
    one = _SCRIPT.replace("digest(workload())", "digest(workload()[:-2])")
    assert _run({"EXCITE_NUM_THREADS": "1"}, one.format(tests=os.path.join(ROOT, "tests"))) == here
    assert _run({"EXCITE_NUM_THREADS": "2"}, one.format(tests=os.path.join(ROOT, "tests"))) == here
    # numba's workqueue layer is not thread-safe: parallel launches are serialised, others run serially
    assert _run({"EXCITE_NUM_THREADS": "2", "NUMBA_THREADING_LAYER": "workqueue"}) == digest(workload())


@pytest.mark.skipif(not hasattr(os, "fork"), reason="fork() is POSIX-only")
def test_kernels_work_in_a_child_forked_after_parallel_use():
    code = """
import os, sys
sys.path.insert(0, {tests!r})
from test_kernels_threads import digest, workload
parent = digest(workload())
pid = os.fork()
if pid == 0:
    os._exit(0 if digest(workload()) == parent else 3)
_, status = os.waitpid(pid, 0)
assert os.WIFEXITED(status) and os.WEXITSTATUS(status) == 0, status
print(parent)
""".format(tests=os.path.join(ROOT, "tests"))
    assert _run({"EXCITE_NUM_THREADS": "2"}, code) == digest(workload())


def test_import_excite_does_not_import_numba():
    code = "import sys, excite, excite.nn, excite.vision.models; print(int('numba' in sys.modules))"
    assert _run({}, code) == "0"
