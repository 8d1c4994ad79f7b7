"""Lazy numba compilation and thread control for the compiled kernels (EXCITE_NUM_THREADS).

Process-wide side effects, when the first compiled kernel runs (``EXCITE_THREAD_CONTROL=0`` turns
both off): OpenBLAS/MKL are set to one thread (excite splits large products over its own threads,
`blas`), and ``GOMP_SPINCOUNT=20000`` is put into the environment unless ``OMP_WAIT_POLICY`` or
``GOMP_SPINCOUNT`` is set (GNU OpenMP's idle threads otherwise spin for ~300k iterations, taking the
core the next BLAS call or another process needs).

Nothing here imports numba until the first compiled kernel runs, so ``import excite`` stays
fast. Each kernel is compiled lazily and cached on disk as a ``parallel=True`` variant (run
with fewer threads when the work is small) and, only when needed, a serial one: in a child
forked after GNU OpenMP started (libgomp is not fork-safe; numba aborts the child), and when
numba's 'workqueue' layer (not thread-safe) is already busy with a call from another thread.
"""
import os
import threading
import types

from . import bounds, cache, compiler

_ENV = "EXCITE_NUM_THREADS"
_CONTROL_ENV = "EXCITE_THREAD_CONTROL"
_lock = threading.Lock()  # guards configuration, and parallel launches on the workqueue layer
_state = None
_local = threading.local()  # numba's thread count is per calling thread
_forked = False
# kernels estimated to take less than this run on one thread. Measured with 2 threads on an idle 2-core
# machine, MobileNetV3-Small compiled at batch 1: 2.9 ms at 40 us, 2.2 ms at 5 us (its layers are small);
# on a busy machine every parallel launch may wait for a scheduler tick, whatever this is
PARALLEL_MIN_NS = 5_000
# Below these sizes (elements), NumPy costs less than a compiled kernel's launch; measured per kind
# of kernel: a fused SE block replaces several NumPy calls, so it pays off sooner.
COMPILED_MIN_ELEMENTS = {"elementwise": 1 << 15, "batch_norm": 1 << 15, "global_pool": 1 << 16, "se": 1 << 12}
FLOATS = ("float32", "float64")  # the dtypes the compiled kernels are built for


def compiled_worthwhile(array, kind):
    """True if ``array`` (float32/float64, large enough for ``kind`` of `COMPILED_MIN_ELEMENTS`) should
    go to the compiled kernels."""
    return array.dtype.name in FLOATS and array.size >= COMPILED_MIN_ELEMENTS[kind]


def env_int(name, default, low):
    """The integer in environment variable ``name`` (at least ``low``), or ``default`` when unset or not a number."""
    value = os.environ.get(name, "").strip()
    if value:
        try:
            return max(low, int(value))
        except ValueError:
            pass
    return default


def requested_threads():
    """Threads the kernels may use: ``EXCITE_NUM_THREADS`` if set (>= 1), else every core."""
    return env_int(_ENV, os.cpu_count() or 1, 1)


def thread_control():
    """False when ``EXCITE_THREAD_CONTROL=0``: leave the BLAS thread count and GOMP_SPINCOUNT alone."""
    return os.environ.get(_CONTROL_ENV, "1").strip() != "0"


def _mark_forked():
    global _forked
    _forked = True


class _State:
    """What was decided once per process: thread count and whether parallel calls need a lock."""

    def __init__(self):
        import numba

        self.numba = numba
        self.threads = min(requested_threads(), numba.config.NUMBA_NUM_THREADS)
        layer = _choose_threading_layer(numba)
        # workqueue aborts when two Python threads launch parallel kernels at once
        self.needs_lock = layer == "workqueue"
        self.fork_unsafe = layer == "omp"
        # one thread pool at a time: BLAS runs single-threaded and `blas.matmul` splits large
        # products across excite's own threads (two spinning pools on two cores starve each other)
        self.blas_single_threaded = thread_control() and _set_blas_threads(1)
        self._set_threads_checked = numba.set_num_threads

    def set_num_threads(self, n):
        """numba's thread count for the calling thread. numba.set_num_threads takes two locks (one a
        multiprocessing lock) on every call to see whether its pool is up; once it is, the setter
        behind it is enough (a few microseconds per kernel launch at batch 1)."""
        self._set_threads_checked(n)
        from numba.np.ufunc import parallel

        fast = getattr(parallel, "_set_num_threads", None)
        if fast is not None and getattr(parallel, "_is_initialized", False):
            self.set_num_threads = fast


def _choose_threading_layer(numba):
    """Prefer a thread-safe layer (tbb, then omp); settle for workqueue behind a lock."""
    cfg = numba.config
    # libgomp's idle workers spin ~300k iterations by default, stealing the core that a BLAS call or
    # another process needs next; a shorter spin keeps launches fast without that (read at load time)
    if thread_control() and "OMP_WAIT_POLICY" not in os.environ:
        os.environ.setdefault("GOMP_SPINCOUNT", "20000")
    if cfg.THREADING_LAYER not in ("default", "", None):
        chosen = cfg.THREADING_LAYER  # the user asked for something: respect it
    else:
        chosen = "workqueue"
        for name, module in (("tbb", "tbbpool"), ("omp", "omppool")):
            try:
                __import__(f"numba.np.ufunc.{module}")
            except Exception:  # noqa: BLE001  (missing shared library, ABI mismatch, ...)
                continue
            chosen = name
            break
        cfg.THREADING_LAYER = chosen
    if chosen in ("safe", "threadsafe"):
        return "omp"  # treat as thread-safe; 'omp' is the stricter assumption about fork
    if chosen == "forksafe":
        return "workqueue"
    return chosen


def _set_blas_threads(n):
    """Set OpenBLAS/MKL's thread count like threadpoolctl does (without depending on it); True if done."""
    import ctypes

    try:
        with open("/proc/self/maps") as f:
            paths = {line.split()[-1] for line in f if "blas" in line.lower() or "mkl_rt" in line}
    except OSError:
        return False
    setters = ("scipy_openblas_set_num_threads64_", "scipy_openblas_set_num_threads",
               "openblas_set_num_threads64_", "openblas_set_num_threads", "MKL_Set_Num_Threads")
    done = False
    for path in paths:
        try:
            lib = ctypes.CDLL(path)
        except OSError:
            continue
        for name in setters:
            fn = getattr(lib, name, None)
            if fn is not None:
                fn(ctypes.c_int(n))
                done = True
                break
    return done


def configured():
    """The process-wide threading decisions (numba imported and configured on first call)."""
    global _state
    if _state is None:
        with _lock:
            if _state is None:
                _state = _State()
                if hasattr(os, "register_at_fork"):
                    os.register_at_fork(after_in_child=_mark_forked)
    return _state


def _renamed(func, suffix):
    """A copy of ``func`` under another qualname: numba names its cache files by qualname."""
    clone = types.FunctionType(func.__code__, func.__globals__, func.__name__ + suffix,
                               func.__defaults__, func.__closure__)
    clone.__qualname__ = func.__qualname__ + suffix
    clone.__module__ = func.__module__
    return clone


class Kernel:
    """A numba kernel compiled on first use; calls pick the parallel or the serial variant."""

    def __init__(self, func):
        self.func = func
        self.__name__ = func.__name__
        self.__doc__ = func.__doc__
        self._parallel = None
        self._serial = None

    def _compile(self, parallel):
        configured()
        ident = (self.func.__module__, self.__name__, "parallel" if parallel else "serial")
        if parallel:
            self._parallel = _jit(self.func, ident, parallel=True)
            return self._parallel
        self._serial = _jit(_renamed(self.func, "_serial"), ident)
        return self._serial

    def serial(self, *args):
        fn = self._serial or self._compile(False)
        return fn(*args)

    def twin(self):
        """The kernel's NumPy twin (`numpy_tier`), or None."""
        from . import numpy_tier

        return numpy_tier.twin(self.func.__module__, self.__name__)

    def __call__(self, *args, work_ns=None):
        """Run on all of excite's threads, or on one when ``work_ns`` (the estimated single-thread
        time) is below `PARALLEL_MIN_NS`: waking a second thread costs microseconds on an idle
        machine but can cost a scheduler tick when the cores are busy. While the kernel's build is
        on its way (`compiler`, tiered execution), its NumPy twin runs instead."""
        if _numpy_tier and self.twin() is not None:
            return self.twin()(*args)
        try:
            return self._run(args, work_ns)
        except compiler.NotBuiltYet:
            return self.twin()(*args)

    def bind(self, *args, work_ns=None):
        """``self(*args, work_ns=work_ns)`` as a function of no arguments, for arguments that stay the
        same from call to call (a compiled graph's buffers and constants): see `BoundKernel`."""
        return BoundKernel(self, args, work_ns)

    def _run(self, args, work_ns):
        state = _state or configured()
        if _forked and state.fork_unsafe:
            return self.serial(*args)
        wanted = state.threads if work_ns is None or work_ns >= PARALLEL_MIN_NS else 1
        fn = self._parallel or self._compile(True)
        if getattr(_local, "threads", None) != wanted:
            state.set_num_threads(wanted)
            _local.threads = wanted
        if not state.needs_lock:
            return fn(*args)
        if not _lock.acquire(blocking=False):
            return self.serial(*args)  # another thread is in a parallel launch
        try:
            return fn(*args)
        finally:
            _lock.release()


class BoundKernel:
    """A kernel call on fixed arguments. Once a call has run compiled, later calls go straight to the
    compiled overload's entry point: numba's dispatcher works out the type of every argument on every
    call to pick the overload, about 3 us for a kernel's dozen arguments, which adds up over a compiled
    graph's hundred small steps at batch 1. Until then (the build not loaded yet, as numba loads
    cached builds on a first call; the NumPy twin running while it is built), in a forked child and
    on the workqueue layer, calls take the `Kernel`'s usual way."""

    __slots__ = ("kernel", "args", "work_ns", "_entry", "_threads")

    def __init__(self, kernel, args, work_ns):
        self.kernel, self.args, self.work_ns = kernel, args, work_ns
        self._entry = None
        self._threads = None

    def __call__(self):
        entry = self._entry
        if not entry or _numpy_tier or _forked:
            result = self.kernel(*self.args, work_ns=self.work_ns)
            if entry is None:
                self._resolve()
            return result
        if getattr(_local, "threads", None) != self._threads:
            _state.set_num_threads(self._threads)
            _local.threads = self._threads
        return entry(*self.args)

    def _resolve(self):
        """Look the entry point up (``_entry``: None to try again after the next call, False never)."""
        state, fn = _state, self.kernel._parallel
        if state is not None and (state.needs_lock or (_forked and state.fork_unsafe)):
            self._entry = False  # (for good: these calls keep the usual way)
            return
        if state is None or fn is None or _numpy_tier:
            return
        overload = fn.overloads.get(tuple(fn.typeof_pyval(a) for a in self.args))
        if overload is not None:  # (None: the twin ran, the build is on its way)
            self._threads = state.threads if self.work_ns is None or self.work_ns >= PARALLEL_MIN_NS else 1
            self._entry = overload.entry_point


def call_helper(module, name, *args):
    """Call helper ``name`` of ``module`` (a `LazyModule`) from Python: its NumPy twin while its build
    is on its way, as `Kernel` does."""
    from . import numpy_tier

    twin = numpy_tier.twin(module._name, name)
    if not (_numpy_tier and twin is not None):
        try:
            return getattr(module, name)(*args)
        except compiler.NotBuiltYet:
            pass
    return twin(*args)


_numpy_tier = compiler.tiers() == "numpy"


def use_numpy_tier(flag):
    """Run every kernel with a NumPy twin on its twin (True) or as usual (False); returns the previous
    setting. For tests and debugging (``EXCITE_KERNEL_TIERS=numpy`` sets it at import)."""
    global _numpy_tier
    previous, _numpy_tier = _numpy_tier, bool(flag)
    return previous


class LazyModule:
    """Stands for ``excite.kernels.<name>``, imported (with numba) on first attribute access;
    attributes are then copied here, so later lookups cost no more than a module's."""

    def __init__(self, name):
        self._name = name

    def __getattr__(self, attr):
        import importlib

        value = getattr(importlib.import_module(f"{__package__}.compiled.{self._name}"), attr)
        setattr(self, attr, value)
        return value


def _jit(func, ident=None, **options):
    """``numba.njit(func)`` with the options every kernel and helper shares (checked under
    EXCITE_KERNEL_BOUNDSCHECK=1, see `bounds`). Called from Python with new argument types, a
    function with an ``ident`` (module, name, variant: see `compiler.resolve`) compiles in a worker
    process, with a notice (`compiler`)."""
    import numba

    from . import compiler

    cache.install()  # into $EXCITE_HOME/kernels/<key>, before the first njit creates its cache
    if bounds.enabled():
        func = _renamed(func, bounds.SUFFIX)
    dispatcher = numba.njit(**bounds.jit_options(dict(dict(cache=True, nogil=True, error_model="numpy"), **options)))(func)
    return dispatcher if ident is None else compiler.hook(dispatcher, ident)


def kernel(func):
    """Decorator: ``func`` (written with ``numba.prange``) becomes a lazily compiled `Kernel`."""
    return Kernel(func)


def helper(func):
    """Decorator for small njit functions that kernels call (LLVM usually inlines them)."""
    return _jit(func, (func.__module__, func.__name__, "helper"))


def inline_helper(func, cache=True):
    """Like `helper`, inlined by numba itself: constant arguments then specialise the callee's loops.

    ``cache=False`` for generated functions (no source file): only the kernels they are inlined
    into are cached."""
    return _jit(func, cache=cache, inline="always")
