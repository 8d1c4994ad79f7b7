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
    if name in ("nn", "vision", "io", "optim", "data", "onnx", "kernels", "graph", "distributed"):
        return _lazy(name)
    if name in ("load", "save"):
        return getattr(_lazy("io"), name)
    raise AttributeError(f"module 'excite' has no attribute {name!r}")


def compile(model, example_input, passes=None):  # noqa: A001  (torch.compile's name)
    """Compile ``model`` for inference on inputs like ``example_input``: see `excite.graph.executor.compile`."""
    from .graph.executor import compile as _compile

    return _compile(model, example_input, passes)


# torch-style functions for the Tensor methods that torch also exposes at top level
def matmul(input, other):
    return input @ other


def exp(input):
    return input.exp()


def log(input):
    return input.log()


def sqrt(input):
    return input.sqrt()


def sum(input, dim=None, keepdim=False):  # noqa: A001
    return input.sum(dim, keepdim)


def mean(input, dim=None, keepdim=False):
    return input.mean(dim, keepdim)


def amax(input, dim=(), keepdim=False):
    return input.amax(dim, keepdim)


def reshape(input, shape):
    return input.reshape(shape)


def flatten(input, start_dim=0, end_dim=-1):
    return input.flatten(start_dim, end_dim)


def permute(input, dims):
    return input.permute(dims)


def transpose(input, dim0, dim1):
    return input.transpose(dim0, dim1)


def squeeze(input, dim=None):
    return input.squeeze(dim)


def unsqueeze(input, dim):
    return input.unsqueeze(dim)


def relu(input):
    return input.relu()


def sigmoid(input):
    return input.sigmoid()


def tanh(input):
    return input.tanh()


def softmax(input, dim):
    return input.softmax(dim)


def log_softmax(input, dim):
    return input.log_softmax(dim)
