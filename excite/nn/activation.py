"""Activation modules (`ReLU`, `ReLU6`, `Sigmoid`, `Tanh`, `Hardsigmoid`, `Hardswish`, `SiLU`).

``inplace=`` is accepted (and shown in repr) for torch compatibility, but the input is never
overwritten: autograd may still need it, and another thread may be reading it.
"""
from . import functional as F
from .module import Module


class _InplaceActivation(Module):
    _function = None
    _show_inplace = True  # torch prints 'inplace=True' for these, not for Hardsigmoid/Hardswish

    def __init__(self, inplace=False):
        super().__init__()
        self.inplace = inplace

    def forward(self, input):
        return type(self)._function(input)

    def extra_repr(self):
        return "inplace=True" if self.inplace and self._show_inplace else ""


class ReLU(_InplaceActivation):
    _function = staticmethod(F.relu)


class ReLU6(_InplaceActivation):
    _function = staticmethod(F.relu6)
    min_val = 0.0
    max_val = 6.0


class Hardsigmoid(_InplaceActivation):
    _function = staticmethod(F.hardsigmoid)
    _show_inplace = False


class Hardswish(_InplaceActivation):
    _function = staticmethod(F.hardswish)
    _show_inplace = False


class SiLU(_InplaceActivation):
    _function = staticmethod(F.silu)


class Sigmoid(Module):
    def forward(self, input):
        return F.sigmoid(input)


class Tanh(Module):
    def forward(self, input):
        return F.tanh(input)


class Softmax(Module):
    def __init__(self, dim=None):
        super().__init__()
        self.dim = dim

    def forward(self, input):
        return F.softmax(input, self.dim if self.dim is not None else (0 if input.ndim in (0, 1, 3) else 1))

    def extra_repr(self):
        return f"dim={self.dim}"
