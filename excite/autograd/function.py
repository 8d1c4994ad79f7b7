"""`Function`: one differentiable operation, pairing a forward kernel with its backward."""
import numpy as np

from .grad_mode import is_grad_enabled


class Function:
    """A node of the autograd graph.

    Subclasses implement ``forward(self, *arrays, **kw) -> ndarray`` on plain NumPy arrays
    (Tensor arguments arrive unwrapped) and ``backward(self, grad) -> tuple`` returning one
    gradient array (or None) per positional argument. ``apply`` wraps the result in a Tensor
    and links it into the graph when any input requires grad and grad mode is on.
    """

    inputs = ()
    freed = False

    def save_for_backward(self, *arrays):
        self.saved_tensors = arrays

    def forward(self, *args, **kwargs):  # pragma: no cover - abstract
        raise NotImplementedError

    def backward(self, grad):  # pragma: no cover - abstract
        raise NotImplementedError

    @classmethod
    def apply(cls, *args, **kwargs):
        ctx = cls.__new__(cls)
        raw = []
        needs = []
        any_grad = False
        for a in args:
            if isinstance(a, Tensor):
                raw.append(a.data)
                r = a.requires_grad
                needs.append(r)
                any_grad = any_grad or r
            else:
                raw.append(a)
                needs.append(False)
        record = any_grad and is_grad_enabled()
        ctx.needs_input_grad = tuple(needs) if record else (False,) * len(args)
        out = ctx.forward(*raw, **kwargs)
        result = Tensor(out if isinstance(out, np.ndarray) else np.asarray(out))
        if record:
            ctx.inputs = tuple(a if isinstance(a, Tensor) else None for a in args)
            result.requires_grad = True
            result.grad_fn = ctx
        return result

    def release(self):
        """Drop everything saved for backward; keep only the graph links."""
        inputs = self.inputs
        self.__dict__.clear()
        self.inputs = inputs
        self.freed = True

    def name(self):
        return type(self).__name__ + "Backward"

    def __repr__(self):
        return f"<{self.name()}>"


from ..tensor import Tensor  # noqa: E402  (circular: Tensor routes operators to functions)
