"""The NumPy tier: a plain NumPy/BLAS twin of each compiled kernel, run while its compiled build is on its way.

On a fresh install (an empty kernel cache) a compiled kernel takes seconds to build. The first call
of a kernel whose build is missing queues the build in a worker process (`excite.kernels.compiler`)
and runs the kernel's twin here instead; once the build is in the cache the compiled kernel takes
over. A twin has the kernel's name and signature, lives in the module named like the kernel's
(``compiled/gemm.py`` -> ``numpy_tier/gemm.py``) and has the same effect: it writes the same output
arrays (to float tolerance) and returns what the kernel returns. Tests hold every twin to its kernel.
"""
import importlib

_MISSING = object()
_found = {}


def twin(module, name):
    """The NumPy twin of kernel ``name`` of ``excite.kernels.compiled.<module>`` (a module path or its
    last part), or None when it has none."""
    module = module.rsplit(".", 1)[-1]
    key = (module, name)
    found = _found.get(key, _MISSING)
    if found is _MISSING:
        try:
            found = getattr(importlib.import_module(f"{__name__}.{module}"), name, None)
        except ModuleNotFoundError:
            found = None
        _found[key] = found
    return found
