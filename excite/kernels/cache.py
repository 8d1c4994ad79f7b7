"""Where the compiled kernels are cached on disk: ``$EXCITE_HOME/kernels/<key>``, never next to the sources.

numba caches a function beside its source file (``__pycache__``) by default: inside site-packages,
which may be read-only or shared between users and machines. excite's kernels go to the per-user
directory instead (`excite._home.excite_home`, the one checkpoints use), in a subdirectory whose
name is the key: excite's version, numba's and llvmlite's, the CPU's name and a hash of its features,
and a hash of the kernels' source files (numba's own index checks only the file a function is
defined in, not the helpers and formulas it inlines from other files). Another CPU, another version
or an edited kernel file therefore never loads a stale build; the bounds-checked build
(`bounds`) has keys of its own. Only functions defined under ``excite/kernels`` are redirected.
"""
import hashlib
import os
import shutil
import sys
import tempfile

from .._home import excite_home
from . import bounds

KERNELS_DIR = os.path.dirname(os.path.abspath(__file__))
_sources_hash = None
_key = None
_installed = False


def root():
    """The directory holding one subdirectory per cache key."""
    return os.path.join(excite_home(), "kernels")


# what the compiled code is made of: numba's code, the activation formulas it inlines, the jit options
SOURCES = ("activations.py", "threads.py", "bounds.py")


def sources_hash(top=None):
    """A hash of the kernels' sources (``compiled/*.py`` and `SOURCES` under ``top``, default this
    package); this package's once a process."""
    global _sources_hash
    if top is None and _sources_hash is not None:
        return _sources_hash
    top = top or KERNELS_DIR
    compiled = os.path.join(top, "compiled")
    paths = [os.path.join(top, name) for name in SOURCES]
    paths += [os.path.join(compiled, name) for name in sorted(os.listdir(compiled)) if name.endswith(".py")]
    digest = hashlib.sha256()
    for path in paths:
        digest.update(os.path.relpath(path, top).encode())
        with open(path, "rb") as f:
            digest.update(f.read())
    if top == KERNELS_DIR:
        _sources_hash = digest.hexdigest()[:12]
    return digest.hexdigest()[:12]


def key_parts():
    """What a cached kernel is valid for: {excite, numba, llvmlite, python, cpu, features, sources, build}."""
    import llvmlite
    import llvmlite.binding as ll
    import numba

    from .. import __version__

    cpu = numba.config.CPU_NAME or ll.get_host_cpu_name()
    features = numba.config.CPU_FEATURES or ll.get_host_cpu_features().flatten()
    return {"excite": __version__, "numba": numba.__version__, "llvmlite": llvmlite.__version__,
            "python": "%d%d" % sys.version_info[:2], "cpu": cpu,
            "features": hashlib.sha256(features.encode()).hexdigest()[:8], "sources": sources_hash(),
            "build": "boundscheck" if bounds.enabled() else "plain"}


def key(parts=None):
    """The subdirectory name made of `key_parts` (``parts`` instead, for tests)."""
    global _key
    if parts is not None:
        return _format(parts)
    if _key is None:
        _key = _format(key_parts())
    return _key


def _format(p):
    name = (f"excite{p['excite']}-numba{p['numba']}-llvmlite{p['llvmlite']}-py{p['python']}-{p['cpu']}-"
            f"{p['features']}-src{p['sources']}")
    return name if p["build"] == "plain" else f"{name}-{p['build']}"


def directory():
    """This process's kernel cache: ``root()/key()`` (created on first use)."""
    return os.path.join(root(), key())


def _fallback_directory():
    """A temporary directory of this user's, when `directory` cannot be written (read-only home)."""
    return os.path.join(tempfile.gettempdir(), f"excite-{os.getuid() if hasattr(os, 'getuid') else 'user'}",
                        "kernels", key())


def install():
    """Make numba cache excite's kernels in `directory` (idempotent; numba must be importable)."""
    global _installed
    if _installed:
        return
    from numba.core import caching

    class ExciteCacheLocator(caching._SourceFileBackedLocatorMixin, caching._CacheLocator):
        """numba's cache locator for functions defined under excite/kernels: the keyed user directory."""

        def __init__(self, py_func, py_file, path):
            self._py_file = py_file
            self._lineno = py_func.__code__.co_firstlineno
            self._cache_path = path

        def get_cache_path(self):
            return self._cache_path

        @classmethod
        def from_function(cls, py_func, py_file):
            if not os.path.abspath(py_file).startswith(KERNELS_DIR + os.sep) or not os.path.exists(py_file):
                return None
            for path in (directory(), _fallback_directory()):
                self = cls(py_func, py_file, path)
                try:
                    self.ensure_cache_path()
                except OSError:
                    continue
                return self
            return None

    impl = getattr(caching, "CacheImpl", None) or caching._CacheImpl  # renamed in numba 0.6x
    impl._locator_classes.insert(0, ExciteCacheLocator)
    _installed = True


def stats(path):
    """(number of compiled kernels, bytes) under ``path``: one index file (.nbi) per kernel and variant."""
    entries = size = 0
    for folder, _, files in os.walk(path):
        for name in files:
            try:
                size += os.path.getsize(os.path.join(folder, name))
            except OSError:
                continue
            entries += name.endswith(".nbi")
    return entries, size


def describe():
    """Lines for ``excite info --cache``: the directory, this process's key and every key's size."""
    top = root()
    lines = [f"kernel cache: {top}", f"current key: {key()}"]
    keys = sorted(os.listdir(top)) if os.path.isdir(top) else []
    total_entries = total_size = 0
    for name in keys:
        path = os.path.join(top, name)
        if not os.path.isdir(path):
            continue
        entries, size = stats(path)
        total_entries += entries
        total_size += size
        lines.append(f"  {name}{' (current)' if name == key() else ''}: {entries} kernels, {size / 2**20:.1f} MB")
    lines.append(f"total: {total_entries} kernels, {total_size / 2**20:.1f} MB"
                 + ("" if keys else " (empty: kernels compile on first use, or run `excite warmup`)"))
    return lines


def clear():
    """Delete every cached kernel (all keys); returns the bytes freed."""
    top = root()
    if not os.path.isdir(top):
        return 0
    size = stats(top)[1]
    shutil.rmtree(top)
    return size
