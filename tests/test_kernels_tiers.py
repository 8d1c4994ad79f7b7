"""Tiered execution (issue #15): while a kernel's compiled build is on its way, its NumPy twin
(`excite.kernels.numpy_tier`) runs. Both tiers must give the same outputs and gradients, every
compiled kernel must have a twin, and on an empty cache the first call runs the twin, later calls the
build (in-process once it lands, or in the next process after the exit finished it).

The kernel-by-kernel comparisons are in test_tier_gemm.py and test_tier_norm.py; here whole models.
"""
import inspect
import os
import subprocess
import sys

import numpy as np
import pytest

import excite as ex
import excite.nn.functional as F
from excite.kernels import compiler, numpy_tier, threads
from excite.vision import models
from oracle import assert_close

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
COMPILED_MODULES = ("batchnorm", "channel_reduce", "depthwise_cl", "elementwise", "gemm", "grouped")
CALLED_FROM_PYTHON = {("batchnorm", "inference_affine")}  # helpers Python calls (through threads.call_helper)


def _kernels():
    import importlib

    for name in COMPILED_MODULES:
        module = importlib.import_module(f"excite.kernels.compiled.{name}")
        for attr, value in vars(module).items():
            if isinstance(value, threads.Kernel) and value.func.__module__ == module.__name__:
                yield name, attr, value.func
    for name, attr in sorted(CALLED_FROM_PYTHON):
        yield name, attr, importlib.import_module(f"excite.kernels.compiled.{name}").__dict__[attr].py_func


@pytest.mark.parametrize("module,name,func", list(_kernels()), ids=lambda v: v if isinstance(v, str) else "")
def test_every_compiled_kernel_has_a_twin_with_its_signature(module, name, func):
    twin = numpy_tier.twin(module, name)
    assert twin is not None, f"excite.kernels.numpy_tier.{module} has no {name}"
    assert list(inspect.signature(twin).parameters) == list(inspect.signature(func).parameters)


class _Twins:
    """Run a block on the NumPy tier, recording which twins ran."""

    def __enter__(self):
        self.used = set()
        self._previous = threads.use_numpy_tier(True)
        self._lookup = numpy_tier.twin
        used = self.used

        def recording(module, name):
            found = self._lookup(module, name)
            if found is not None:
                used.add(name)
            return found

        numpy_tier.twin = recording
        return self

    def __exit__(self, *exc):
        numpy_tier.twin = self._lookup
        threads.use_numpy_tier(self._previous)


def _close(actual, expected, what):
    assert_close(np.asarray(actual), np.asarray(expected), what, rtol=2e-4, atol=2e-4)


@pytest.mark.parametrize("name,batch,size", [("mobilenet_v3_small", 2, 96), ("efficientnet_b0", 1, 64),
                                             ("regnet_y_400mf", 2, 64)])
def test_both_tiers_give_the_same_inference(name, batch, size):
    ex.manual_seed(0)
    model = models.get_model(name).eval()
    x = ex.randn(batch, 3, size, size)
    with ex.no_grad():
        eager = model(x).numpy()
        compiled_model = ex.compile(model, x)
        compiled = compiled_model(x).numpy()
        with _Twins() as twins:
            eager_twin = model(x).numpy()
            compiled_twin = ex.compile(model, x)(x).numpy()
    # (float32 groups of 8: the unpacked grouped kernel on half-width vectors)
    assert {"matmul_broadcast", "depthwise_forward_cl" if name != "regnet_y_400mf" else "grouped_forward",
            "conv_dense"} <= twins.used, twins.used
    _close(eager_twin, eager, f"{name} eager, NumPy tier vs compiled")
    _close(compiled_twin, compiled, f"{name} excite.compile, NumPy tier vs compiled")


@pytest.mark.parametrize("name,batch,size", [("mobilenet_v3_digits", 8, 32), ("regnet_y_400mf", 2, 64)])
def test_both_tiers_give_the_same_training_step(name, batch, size):
    """In float64: a train-mode step of a deep network amplifies float32 rounding (batch norm over a
    few values), which would hide a real difference; the twins are the kernels' float64 builds' twins too."""
    ex.manual_seed(0)
    x = ex.randn(batch, 3, size, size).double()
    classes = 10 if name == "mobilenet_v3_digits" else 1000
    y = ex.tensor(np.arange(batch) % classes)

    def step():
        ex.manual_seed(1)
        model = models.get_model(name).double().train()
        loss = F.cross_entropy(model(x), y)
        loss.backward()
        return loss.item(), {k: p.grad.numpy().copy() for k, p in model.named_parameters()}, \
            {k: b.numpy().copy() for k, b in model.named_buffers()}

    loss, grads, buffers = step()
    with _Twins() as twins:
        loss_twin, grads_twin, buffers_twin = step()
    assert {"matmul_at_b", "backward_sums", "channel_sums"} <= twins.used, twins.used
    if name == "regnet_y_400mf":
        assert {"grouped_forward_packed", "grouped_weight_gradient_packed"} <= twins.used, twins.used
    assert loss_twin == pytest.approx(loss, rel=1e-12)
    for key in grads:
        assert_close(grads_twin[key], grads[key], f"{name} grad of {key}, NumPy tier vs compiled", rtol=1e-9,
                     atol=1e-9)
    for key in buffers:
        assert_close(buffers_twin[key], buffers[key], f"{name} buffer {key}, NumPy tier vs compiled", rtol=1e-9,
                     atol=1e-9)


_FIRST = """
import sys
import numpy as np
from excite.kernels import activation as A, compiler
x = np.linspace(-3, 3, 1 << 16, dtype=np.float32)
first = A.forward(x, "hardswish")
print("deferred", len(compiler._deferred), flush=True)
if sys.argv[1] == "first":
    import time
    deadline = time.monotonic() + 200
    while compiler._deferred and time.monotonic() < deadline:  # dropped on the first call after the build landed
        A.forward(x, "hardswish")
        time.sleep(0.05)
    print("switched", not compiler._deferred, np.array_equal(first, A.forward(x, "hardswish")), flush=True)
grad = A.backward(np.ones_like(x), x, "hardswish")  # its build is still on its way at the exit
print("deferred", len(compiler._deferred), flush=True)
np.save(sys.argv[2], np.stack([first, grad]))
"""


def test_an_empty_cache_runs_the_twins_then_the_builds(tmp_path):
    env = dict(os.environ, EXCITE_HOME=str(tmp_path / "home"), EXCITE_KERNEL_TIERS="1", EXCITE_KERNEL_PREFETCH="0",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    for name in ("NUMBA_CACHE_DIR", "EXCITE_PROGRESS_TTY", compiler.WORKERS_ENV):
        env.pop(name, None)

    def run(mode, out):
        return subprocess.run([sys.executable, "-c", _FIRST, mode, str(out)], env=env, capture_output=True,
                              text=True, timeout=400)

    first = run("first", tmp_path / "first.npy")
    assert first.returncode == 0, first.stderr
    assert first.stdout.splitlines() == ["deferred 1", "switched True True", "deferred 1"], first.stdout
    assert first.stderr.startswith(f"excite: {compiler.NOTICE}")
    assert "excite: finishing 1 kernel builds for the next run" in first.stderr  # the backward's, at the exit
    second = run("second", tmp_path / "second.npy")  # both builds are cached now: nothing deferred
    assert second.returncode == 0, second.stderr
    assert second.stdout.splitlines() == ["deferred 0", "deferred 0"], second.stdout
    assert compiler.NOTICE not in second.stderr
    np.testing.assert_allclose(np.load(tmp_path / "second.npy"), np.load(tmp_path / "first.npy"), rtol=1e-6, atol=1e-7)


_INTERRUPTED = """
import numpy as np
from excite.kernels import activation as A, compiler
A.forward(np.linspace(-3, 3, 1 << 16, dtype=np.float32), "hardswish")
print("deferred", len(compiler._deferred), flush=True)
raise KeyboardInterrupt  # as a Ctrl-C would: the program ends now, not after the builds
"""


def test_a_program_stopped_by_ctrl_c_does_not_finish_the_builds(tmp_path):
    env = dict(os.environ, EXCITE_HOME=str(tmp_path / "home"), EXCITE_KERNEL_TIERS="1", EXCITE_KERNEL_PREFETCH="0",
               PYTHONPATH=ROOT + os.pathsep + os.environ.get("PYTHONPATH", ""))
    env.pop("NUMBA_CACHE_DIR", None)
    out = subprocess.run([sys.executable, "-c", _INTERRUPTED], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode != 0 and "KeyboardInterrupt" in out.stderr
    assert out.stdout.splitlines() == ["deferred 1"]
    assert "finishing" not in out.stderr
