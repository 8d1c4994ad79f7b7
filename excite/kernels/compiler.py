"""Kernels compile in worker processes that fill the on-disk cache (`cache`), never silently.

A kernel called with argument types it has no cached build for is compiled by a worker process
(``python -m excite.kernels.compiler``), while this process waits in Python: Ctrl-C stops the wait at
once (numba compiles in C and Python code only between its steps, so an in-process compile would
hold a KeyboardInterrupt for tens of seconds), and a progress line says what is happening:
a bar on a terminal ("compiling kernels for this CPU, once: 7/19"), one plain line on stderr
otherwise. The worker writes the build to the cache; this process then loads it from there.

Tiered execution: a kernel with a NumPy twin (`excite.kernels.numpy_tier`) does not wait. Its first
call queues the build and raises `NotBuiltYet`, on which `threads.Kernel` runs the twin; calls keep
going to the twin until the build is in the cache, then the compiled kernel takes over. So the first
result comes in seconds on an empty cache. At exit, the process finishes the builds it needed (with a
notice; Ctrl-C skips them) so that the next run starts compiled. ``EXCITE_KERNEL_TIERS=0`` waits for
every build instead; ``EXCITE_KERNEL_TIERS=numpy`` runs every twin and compiles nothing (tests).

Up to `max_workers` workers (two on two cores) take queued builds: `prefetch` queues the builds a
workload is known to need (``signatures.txt``) so that they compile side by side, the one being waited
for first. Two builds of one function never run at once (numba's index file of a function is
read, extended and rewritten by each build). ``EXCITE_KERNEL_WORKERS=0`` compiles in-process
(the notice still shows).
"""
import atexit
import base64
import collections
import importlib
import os
import pickle
import subprocess
import sys
import threading
import time

WORKER_ENV = "_EXCITE_KERNEL_WORKER"  # set in the workers: they compile in-process
WORKERS_ENV = "EXCITE_KERNEL_WORKERS"
TIERS_ENV = "EXCITE_KERNEL_TIERS"  # "0": wait for builds; "numpy": twins only (see the module docstring)
IDLE_SECONDS = 20  # a worker with nothing to do for this long exits (another starts when needed)
NOTICE = "compiling kernels for this CPU, once"


def in_worker():
    return os.environ.get(WORKER_ENV) == "1"


def max_workers():
    """``EXCITE_KERNEL_WORKERS`` if set (0: compile in-process), else min(2, cores)."""
    from .threads import env_int

    return env_int(WORKERS_ENV, min(2, os.cpu_count() or 1), 0)


class NotBuiltYet(Exception):
    """Raised to `threads.Kernel` by a kernel whose build is on its way: run the NumPy twin this time."""


def tiers():
    """``EXCITE_KERNEL_TIERS``: "numpy" (twins only), "0" (wait for every build) or "1" (the default)."""
    value = os.environ.get(TIERS_ENV, "1").strip().lower()
    return value if value in ("0", "numpy") else "1"


def has_twin(ident):
    from . import numpy_tier

    return numpy_tier.twin(ident[0], ident[1]) is not None


# ----- what a build is --------------------------------------------------------------------------
def resolve(ident):
    """The numba dispatcher of ``ident`` = (module, name, variant): variant "parallel" or "serial" of
    a `threads.Kernel`, or "helper" for a plain njit function."""
    module, name, variant = ident
    obj = getattr(importlib.import_module(module), name)
    if variant == "helper":
        return obj
    if variant == "parallel":
        return obj._parallel or obj._compile(True)
    return obj._serial or obj._compile(False)


def is_cached(dispatcher, sig):
    """Whether numba's disk cache holds ``dispatcher`` for argument types ``sig`` (fresh for its source)."""
    impl = getattr(dispatcher, "_cache", None)
    cache_file = getattr(impl, "_cache_file", None)
    if cache_file is None:
        return True  # not cached on disk at all: nothing a worker could do
    from numba.core.compiler_lock import global_compiler_lock

    ctx = dispatcher.targetctx
    with global_compiler_lock:  # refreshing the target context is not thread-safe (numba's own loads hold it)
        ctx.refresh()
        try:
            return impl._index_key(sig, ctx.codegen()) in cache_file._load_index()
        except Exception:  # noqa: BLE001  (an unreadable index: numba recompiles, so do we)
            return False


# ----- the builds a workload needs: signatures.txt -------------------------------------------------
SIGNATURES = os.path.join(os.path.dirname(os.path.abspath(__file__)), "signatures.txt")
PREFETCH_ENV = "EXCITE_KERNEL_PREFETCH"  # 0: compile only the builds asked for
RECORD_ENV = "EXCITE_KERNEL_RECORD"  # a file: append each build this process needs (to make signatures.txt)


def format_sig(sig):
    """Argument types as text (None if one has no text form here): ``array(float32,2,C)``, ``int64``."""
    from numba.core import types

    parts = []
    for t in sig:
        if isinstance(t, types.Array):
            if not t.aligned:
                return None
            parts.append(f"array({t.dtype},{t.ndim},{t.layout}{',ro' if not t.mutable else ''})")
        elif isinstance(t, (types.Integer, types.Float, types.Boolean)):
            parts.append(str(t))
        else:
            return None
    return "; ".join(parts)


def parse_sig(text):
    """The inverse of `format_sig`."""
    from numba.core import types

    sig = []
    for part in filter(None, (p.strip() for p in text.split(";"))):
        if part.startswith("array("):
            dtype, ndim, layout, *ro = part[len("array("):-1].split(",")
            sig.append(types.Array(_scalar(types, dtype), int(ndim), layout, readonly=bool(ro)))
        else:
            sig.append(_scalar(types, part))
    return tuple(sig)


def _scalar(types, name):
    return types.boolean if name == "bool" else getattr(types, name)


def load_workloads(path=SIGNATURES):
    """{workload: [(ident, sig text), ...] in the order it needs them} from ``path``: sections ``[name]``,
    then lines ``module name variant | argument types``."""
    workloads, current = {}, None
    try:
        with open(path) as f:
            lines = f.read().splitlines()
    except OSError:
        return {}
    for line in lines:
        line = line.strip()
        if not line or line.startswith("#"):
            continue
        if line.startswith("["):
            current = workloads.setdefault(line.strip("[]"), [])
        elif current is not None and "|" in line:
            head, sig = line.split("|", 1)
            module, name, variant = head.split()
            current.append(((module, name, variant), sig.strip()))
    return workloads


def _record(ident, sig):
    path = os.environ.get(RECORD_ENV)
    text = format_sig(sig)
    if path and text is not None:
        with open(path, "a") as f:
            f.write(f"{' '.join(ident)} | {text}\n")


_prefetched = False


def prefetch(ident, sig):
    """On this process's first build: queue the builds of every known workload that needs this one,
    in the order they are needed (they compile side by side while this process runs)."""
    global _prefetched
    if _prefetched or os.environ.get(PREFETCH_ENV) == "0":
        return
    _prefetched = True
    text = format_sig(sig)
    if text is None or bounds_enabled():
        return
    workloads = load_workloads()
    names = sorted((name for name, entries in workloads.items() if (ident, text) in entries),
                   key=lambda name: _expected is None or _expected not in name)  # stable: file order otherwise
    queue(entry for name in names for entry in workloads[name])


def bounds_enabled():
    from . import bounds

    return bounds.enabled()


def queue(entries):
    """Queue builds ``(ident, sig text)`` that are not in the cache yet; returns their tasks."""
    p = pool()
    tasks = []
    for ident, text in entries:
        try:
            sig = parse_sig(text)
            if is_cached(resolve(ident), sig):
                continue
        except Exception:  # noqa: BLE001  (a stale line: another version's kernel or type)
            continue
        tasks.append(p.submit(ident, sig))
    return tasks


# ----- the notice -------------------------------------------------------------------------------
class Progress:
    """The user-visible notice: a tqdm bar on a terminal, plain lines on stderr otherwise."""

    def __init__(self, stream=None, terminal=None):
        self.stream = stream or sys.stderr
        self.terminal = _isatty(self.stream) if terminal is None else terminal
        self.done = self.total = 0
        self._bar = None
        self._started = None
        self._said = False  # the plain line is written once a process
        self._lock = threading.RLock()

    def add(self, n=1):
        with self._lock:
            if self.total == self.done:  # a new round of compiling
                self._open()
            self.total += n
            if self._bar is not None:
                self._bar.total = self.total
                self._bar.refresh()

    def _open(self):
        self._started = time.perf_counter()
        self.done = self.total = 0
        if self.terminal:
            from tqdm import tqdm

            self._bar = tqdm(total=0, desc=NOTICE, file=self.stream, leave=False, mininterval=0, miniters=1,
                             bar_format="{desc}: {n_fmt}/{total_fmt} [{elapsed}]")
        elif not self._said:
            from . import cache

            self._said = True
            self.stream.write(f"excite: {NOTICE} (cached in {cache.directory()}; NumPy runs meanwhile where it can)\n")
            self.stream.flush()

    def finish_one(self):
        with self._lock:
            self.done += 1
            if self._bar is not None:
                self._bar.update(1)
            if self.done == self.total:
                self.close()

    def close(self):
        if self._bar is not None:
            self._bar.close()
            self._bar = None
        elif self._started is not None and not self.terminal:
            self.stream.write(f"excite: compiled {self.done} kernels in {time.perf_counter() - self._started:.1f} s\n")
            self.stream.flush()
        self._started = None


def _isatty(stream):
    if os.environ.get("EXCITE_PROGRESS_TTY") in ("0", "1"):  # forced (tests, wrappers)
        return os.environ["EXCITE_PROGRESS_TTY"] == "1"
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False


# ----- the worker pool --------------------------------------------------------------------------
class _Task:
    def __init__(self, ident, sig):
        self.ident, self.sig = ident, sig
        self.done = threading.Event()
        self.error = None


class Pool:
    """Queued builds and the worker processes that take them (one feeder thread per worker)."""

    def __init__(self, workers=None, progress=None):
        self.workers = max_workers() if workers is None else workers
        self.progress = progress or Progress()
        self._cond = threading.Condition()
        self._queue = collections.deque()
        self._tasks = {}  # (ident, sig) -> _Task
        self._busy = set()  # idents being compiled
        self._feeders = 0
        self._procs = set()

    def submit(self, ident, sig, urgent=False):
        """Queue a build (once); ``urgent`` puts it first. Returns its task."""
        with self._cond:
            task = self._tasks.get((ident, sig))
            if task is None:
                task = self._tasks[(ident, sig)] = _Task(ident, sig)
                self.progress.add()
                self._queue.append(task)
            if urgent and task in self._queue:
                self._queue.remove(task)
                self._queue.appendleft(task)
            if self._feeders < min(self.workers, len(self._queue) + len(self._busy)):
                self._feeders += 1
                threading.Thread(target=self._feed, daemon=True, name="excite-kernel-compiler").start()
            self._cond.notify_all()
        return task

    def wait(self, task):
        """Block until ``task`` is built; Ctrl-C interrupts the wait within a fraction of a second."""
        global _waiting
        _waiting += 1
        try:
            while not task.done.wait(0.1):
                pass
        finally:
            _waiting -= 1
        return task.error is None

    def _next(self):
        """The first queued task whose function is not being compiled (None after IDLE_SECONDS)."""
        deadline = time.monotonic() + IDLE_SECONDS
        with self._cond:
            while True:
                for task in self._queue:
                    if task.ident not in self._busy:
                        self._queue.remove(task)
                        self._busy.add(task.ident)
                        return task
                left = deadline - time.monotonic()
                if left <= 0:
                    self._feeders -= 1
                    return None
                self._cond.wait(min(left, 1.0))

    def _feed(self):
        proc = None
        try:
            while True:
                task = self._next()
                if task is None:
                    return
                try:
                    if proc is None or proc.poll() is not None:
                        proc = self._start()
                    proc.stdin.write(base64.b64encode(pickle.dumps((task.ident, task.sig))) + b"\n")
                    proc.stdin.flush()
                    reply = proc.stdout.readline().decode().strip()
                    if reply != "ok":
                        task.error = reply or f"the worker exited ({proc.poll()})"
                except (OSError, ValueError, pickle.PicklingError) as e:
                    task.error = repr(e)
                    proc = None
                with self._cond:
                    self._busy.discard(task.ident)
                    self.progress.finish_one()
                    task.done.set()
                    self._cond.notify_all()
        finally:
            if proc is not None:
                self._stop(proc)

    def _start(self):
        from . import bounds

        env = dict(os.environ, **{WORKER_ENV: "1", bounds.ENV: "1" if bounds.enabled() else "0"})
        root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
        env["PYTHONPATH"] = root + (os.pathsep + env["PYTHONPATH"] if env.get("PYTHONPATH") else "")
        proc = subprocess.Popen([sys.executable, "-m", "excite.kernels.compiler"], stdin=subprocess.PIPE,
                                stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, env=env)
        with self._cond:
            self._procs.add(proc)
        return proc

    def _stop(self, proc):
        try:
            proc.stdin.close()
        except OSError:
            pass
        with self._cond:
            self._procs.discard(proc)

    def terminate(self):
        """Stop every worker now (after Ctrl-C): a half-built kernel is never written to the cache."""
        with self._cond:
            procs = list(self._procs)
        for proc in procs:
            if proc.poll() is None:
                proc.kill()


_pool = None
_pool_lock = threading.Lock()
_waiting = 0  # waits in progress for a build (a SIGINT handler that defers Ctrl-C should not then)
_expected = None  # "train" or "inference": whose builds `prefetch` queues first


def waiting():
    """True while this process waits for a kernel build: a Ctrl-C handler that normally defers the stop
    to a safe point (``excite train``) should raise KeyboardInterrupt at once then."""
    return _waiting > 0


def expect(kind):
    """Say what this process is about to do ("train" or "inference"): `prefetch` queues the builds of
    the workloads named so first, in the order they are needed."""
    global _expected
    _expected = kind


def _forget_pool():
    """In a forked child: the parent's feeder threads and pipes are not ours."""
    global _pool, _pool_lock, _prefetched, _deferred
    _pool, _pool_lock, _prefetched, _deferred = None, threading.Lock(), False, {}


if hasattr(os, "register_at_fork"):
    os.register_at_fork(after_in_child=_forget_pool)


def warmup(workloads=None, progress=None):
    """Compile now, in worker processes, every build of ``workloads`` (names of `load_workloads`; all
    by default) that is not cached yet; returns (compiled, failed, already cached)."""
    known = load_workloads()
    names = list(known) if workloads is None else workloads
    entries = list(dict.fromkeys(entry for name in names for entry in known[name]))
    p = pool()
    if progress is not None:
        p.progress = progress
    if p.workers == 0:
        p.workers = 1  # warmup always compiles out of process: Ctrl-C must work
    tasks = queue(entries)
    try:
        failed = sum(not p.wait(task) for task in tasks)
    except KeyboardInterrupt:
        p.terminate()
        raise
    return len(tasks) - failed, failed, len(entries) - len(tasks)


def pool():
    global _pool
    if _pool is None:
        with _pool_lock:
            if _pool is None:
                _pool = Pool()
                # at the end, the builds this process ran twins for are finished (`finish_deferred`),
                # the rest dropped: no process of excite's keeps using the CPU after the command
                # that started it
                atexit.register(_at_exit)
    return _pool


_deferred = {}  # (ident, sig) -> _Task: builds on their way while the NumPy twin runs


def build(ident, dispatcher, sig, defer=False):
    """Make sure ``dispatcher``'s build for ``sig`` is in the disk cache, compiled by a worker; True if so
    (False: the caller compiles in-process). With ``defer`` (the kernel has a NumPy twin), raise
    `NotBuiltYet` instead of waiting, on this call and on every call until the build is there."""
    if in_worker():
        return True
    key = (ident, sig)
    task = _deferred.get(key)
    if task is not None:
        if not task.done.is_set():
            raise NotBuiltYet(ident)
        _deferred.pop(key, None)
        return task.error is None and is_cached(dispatcher, sig)
    _record(ident, sig)
    if is_cached(dispatcher, sig):
        return True
    p = pool()
    if p.workers == 0:
        return False
    task = p.submit(ident, sig, urgent=True)
    prefetch(ident, sig)
    if defer:
        _deferred[key] = task
        raise NotBuiltYet(ident)
    try:
        ok = p.wait(task)
    except KeyboardInterrupt:
        p.terminate()
        raise
    return ok and is_cached(dispatcher, sig)


def finish_deferred(stream=None):
    """Wait for the builds this process ran NumPy twins for (they make the next run compiled), with a
    notice; Ctrl-C stops the wait and the builds. Returns how many finished."""
    tasks = [task for task in list(_deferred.values()) if not task.done.is_set()]
    if not tasks or _pool is None:
        return 0
    stream = stream or sys.stderr
    stream.write(f"excite: finishing {len(tasks)} kernel builds for the next run (Ctrl-C skips them)\n")
    stream.flush()
    try:
        return sum(_pool.wait(task) for task in tasks)
    except KeyboardInterrupt:
        return 0


def drop_deferred():
    """The user stopped the program (Ctrl-C): do not finish the builds at exit."""
    _deferred.clear()


def _at_exit():
    if _pool is None:
        return
    try:
        last = getattr(sys, "last_type", None)  # a script ended by an uncaught Ctrl-C: no waiting
        if not (isinstance(last, type) and issubclass(last, KeyboardInterrupt)):
            finish_deferred()
    finally:
        _pool.terminate()


def hook(dispatcher, ident):
    """Route ``dispatcher``'s compilations for new argument types (those not in memory: numba calls
    ``_compile_for_args`` then) through `build`; calls with known types never get here."""
    compile_for_args = dispatcher._compile_for_args
    deferrable = []  # [bool] once known: the kernel has a NumPy twin

    def compile_in_worker(*args, **kws):
        if kws or in_worker():
            return compile_for_args(*args, **kws)
        if not deferrable:
            deferrable.append(tiers() == "1" and not bounds_enabled() and has_twin(ident))
        sig = tuple(dispatcher.typeof_pyval(a) for a in args)
        if build(ident, dispatcher, sig, defer=deferrable[0]):
            return compile_for_args(*args)  # loads the build from the disk cache
        progress = pool().progress  # in this process after all (no workers, or one failed): say so still
        progress.add()
        try:
            return compile_for_args(*args)
        finally:
            progress.finish_one()

    dispatcher._compile_for_args = compile_in_worker
    return dispatcher


# ----- the worker side ----------------------------------------------------------------------------
def _serve():
    """A worker: read (ident, argument types) lines, compile each into the disk cache, answer one line."""
    import signal

    signal.signal(signal.SIGINT, signal.SIG_DFL)  # Ctrl-C at the terminal ends the worker at once
    if sys.platform.startswith("linux"):  # and so does the end of the process it works for, however it ends
        try:
            import ctypes

            ctypes.CDLL(None).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
        except (OSError, AttributeError):
            pass
    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)  # anything else printed goes where stderr goes
    for line in sys.stdin.buffer:
        try:
            ident, sig = pickle.loads(base64.b64decode(line))
            resolve(ident).compile(sig)
            reply = "ok"
        except Exception as e:  # noqa: BLE001  (reported; the caller compiles in-process and raises it)
            reply = f"error {type(e).__name__}: {e}".replace("\n", " ")[:2000]
        out.write(reply.encode() + b"\n")
        out.flush()


if __name__ == "__main__":
    os.environ[WORKER_ENV] = "1"
    _serve()
