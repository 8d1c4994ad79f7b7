"""Activation modules: one class per registry record (`excite.kernels.activations`), plus `Softmax`.

``ReLU``, ``ReLU6``, ``Sigmoid``, ``Tanh``, ``Hardsigmoid``, ``Hardswish``, ``SiLU`` (and any activation
added with `register_activation`) are made from their records with torch's names, signatures and
``repr``. ``inplace=`` is accepted (and shown in repr) for torch compatibility, but the input is
never overwritten: autograd may still need it, and another thread may be reading it.
"""
import sys

from ..autograd import functions as fn
from ..errors import InvalidArgumentError
from ..autograd.functions import activations
from . import functional as F
from .module import Module


class ActivationModule(Module):
    """The base of the registry's activation modules; ``activation`` is the record's name."""

    activation = None
    _show_inplace = True

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace

    def forward(self, input):
        return fn.Activation.apply(input, self.activation)

    def extra_repr(self):
        return "inplace=True" if self.inplace and self._show_inplace else ""


class _NoInplaceActivation(ActivationModule):
    """torch's Sigmoid and Tanh take no arguments."""

    def __init__(self):
        super().__init__()
        del self.inplace

    def extra_repr(self):
        return ""


def activation_module(record):
    """The module class of ``record`` (``nn.<record.module>``)."""
    base = ActivationModule if record.inplace_argument else _NoInplaceActivation
    namespace = {"activation": record.name, "_show_inplace": record.show_inplace, "__module__": __name__,
                 "__doc__": f"``{record.doc or record.forward}``, elementwise (``torch.nn.{record.module}``).",
                 **record.module_attributes}
    return type(record.module, (base,), namespace)


def register_activation(record):
    """Add an activation to excite from one `excite.kernels.activations.Activation` record: it gets its
    module class (``excite.nn.<module>``), its functional (``excite.nn.functional.<name>``), autograd,
    and ONNX export. Activations registered this way run through NumPy (the compiled kernels hold the
    built-in ones). Returns the module class."""
    import excite.nn

    for namespace, attribute in ((excite.nn, record.module), (F, record.name)):
        if hasattr(namespace, attribute):
            raise InvalidArgumentError(f"cannot register activation {record.name!r}: "
                                       f"{namespace.__name__}.{attribute} already exists")
    record = activations.register(record)
    cls = activation_module(record)
    setattr(sys.modules[__name__], record.module, cls)
    setattr(excite.nn, record.module, cls)
    setattr(F, record.name, F.activation_functional(record))
    return cls


def module_record(module):
    """The registry record behind an activation module instance, or None (another module, or a subclass
    that overrides ``forward``)."""
    cls = type(module)
    if issubclass(cls, ActivationModule) and cls.forward is ActivationModule.forward:
        return activations.get(module.activation)  # GELU picks its record per instance
    return None


for _record in activations.records():
    globals()[_record.module] = activation_module(_record)
del _record


class GELU(ActivationModule):
    """``torch.nn.GELU``: ``x * Phi(x)`` (``approximate='none'``, the erf form) or its tanh approximation
    (``approximate='tanh'``)."""

    def __init__(self, approximate="none"):
        super().__init__()
        del self.inplace
        if approximate not in _GELU:
            raise InvalidArgumentError(f"GELU: approximate must be 'none' or 'tanh', got {approximate!r}")
        self.approximate = approximate
        self.activation = _GELU[approximate]

    def extra_repr(self):
        return f"approximate={self.approximate!r}"


_GELU = {"none": "gelu", "tanh": "_gelu_tanh"}


class Softmax(Module):
    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, input):
        return F.softmax(input, self.dim if self.dim is not None else (0 if input.ndim in (0, 1, 3) else 1))

    def extra_repr(self):
        return f"dim={self.dim}"
