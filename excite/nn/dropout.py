"""`Dropout`: zeroes elements with probability p in training and rescales the rest by 1/(1-p)."""
from ..errors import InvalidArgumentError
from . import functional as F
from .module import Module


class Dropout(Module):
    """``torch.nn.Dropout``; masks are drawn from excite's generator; ``inplace`` is accepted, never used."""

    def __init__(self, p=0.5, inplace=False):
        super().__init__()
        if p < 0 or p > 1:
            raise InvalidArgumentError(f"dropout probability has to be between 0 and 1, but got {p}")
        self.p = p
        self.inplace = inplace

    def forward(self, input):
        return F.dropout(input, self.p, self.training)

    def extra_repr(self):
        return f"p={self.p}, inplace={self.inplace}"
