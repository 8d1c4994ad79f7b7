"""Vision: torchvision-compatible models (``excite.vision.models``), their weights, transforms and datasets."""
import importlib

from . import models

_LAZY_SUBMODULES = ("weights", "transforms", "datasets")


def __getattr__(name):
    # these pull in io / image decoding; load them only when used
    if name in _LAZY_SUBMODULES:
        return importlib.import_module(f"{__name__}.{name}")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
