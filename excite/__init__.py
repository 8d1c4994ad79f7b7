"""excite: Squeeze-and-Excitation networks on a NumPy autograd engine, torchvision-exact."""
from . import autograd
from .autograd import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .autograd.functions import cat, stack
from .creation import (arange, as_tensor, empty, empty_like, from_numpy, full, full_like, ones, ones_like,
                       rand, rand_like, randint, randn, randn_like, randperm, tensor, zeros, zeros_like)
from .errors import (CheckpointError, ExciteError, GradcheckError, InvalidArgumentError, ShapeError,
                     UnsafeCheckpointError)
from .random import get_rng_state, manual_seed, set_rng_state
from .tensor import Tensor, bool_, float16, float32, float64, int32, int64, uint8

__version__ = "0.1.0"
bool = bool_  # noqa: A001  (torch spells it excite.bool)
long = int64
float = float32  # noqa: A001
double = float64


def _lazy(name):
    import importlib

    return importlib.import_module(f"excite.{name}")


def __getattr__(name):
    # heavy subpackages load on first use to keep `import excite` fast
    if name in ("nn", "vision", "io", "optim", "data", "onnx", "kernels"):
        return _lazy(name)
    if name in ("load", "save"):
        return getattr(_lazy("io"), name)
    raise AttributeError(f"module 'excite' has no attribute {name!r}")
