"""`Parameter` (a Tensor a Module learns) and `Buffer` (a Tensor a Module keeps as state)."""
import numpy as np

from ..tensor import Tensor


def _as_array(data):
    if data is None:
        return np.empty((0,), dtype=np.float32)
    if isinstance(data, Tensor):
        return data.data
    return np.asarray(data)


class Parameter(Tensor):
    """A Tensor that a Module registers as a learnable parameter when assigned as an attribute.

    Like ``torch.nn.Parameter`` it shares memory with the tensor (or array) it wraps and
    requires grad by default.
    """

    __slots__ = ()

    def __init__(self, data=None, requires_grad=True):
        super().__init__(_as_array(data), False)
        if requires_grad:
            self.requires_grad_(True)

    def __repr__(self):
        return "Parameter containing:\n" + super().__repr__()

    def __reduce_ex__(self, protocol):
        # pickling/deepcopy rebuild a Parameter, keeping requires_grad (the graph is never copied)
        return (_rebuild_parameter, (self.data, self.requires_grad, self.grad))


def _rebuild_parameter(data, requires_grad, grad):
    p = Parameter(data, requires_grad)
    p.grad = grad
    return p


class Buffer(Tensor):
    """Marks a tensor to be registered as a buffer on assignment (``torch.nn.Buffer``)."""

    __slots__ = ("persistent",)

    def __init__(self, data=None, persistent=True):
        super().__init__(_as_array(data), False)
        self.persistent = persistent


def factory_array(shape, device=None, dtype=None, fill=0.0):
    """A new array for a layer's parameter or buffer; ``device``/``dtype`` follow torch's factory kwargs."""
    from ..errors import InvalidArgumentError
    from ..tensor import as_dtype

    if device is not None and str(device).split(":")[0] != "cpu":
        raise InvalidArgumentError(f"excite runs on the CPU only, got device={device!r}")
    dtype = as_dtype(dtype) or np.dtype(np.float32)
    return np.full(shape, fill, dtype=dtype)
