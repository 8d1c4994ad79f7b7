"""`Function`: one differentiable operation, pairing a forward kernel with its backward."""
import numpy as np

from .grad_mode import is_grad_enabled

# Set while something watches the engine run (`excite.graph.capture`, feature extraction): called as
# ``observer.applied(function_class, args, kwargs, result)`` after every Function. None otherwise.
observer = None


class Function:
    """A node of the autograd graph.

    Subclasses implement ``forward(self, *arrays, **kw) -> ndarray`` on plain NumPy arrays
    (Tensor arguments arrive unwrapped) and ``backward(self, grad) -> tuple`` returning one
    gradient array (or None) per positional argument. ``apply`` wraps the result in a Tensor
    and links it into the graph when any input requires grad and grad mode is on.

    The node keeps only what backward needs: its saved arrays and, per positional argument,
    an edge (the producing Function, the leaf Tensor to accumulate into, or None) plus the
    argument's shape. It never holds intermediate tensors, so freeing the saved arrays after
    backward frees the activations.
    """

    edges = ()
    input_shapes = ()
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
        for a in args:
            if isinstance(a, Tensor):
                raw.append(a.data)
                needs.append(a.requires_grad)
            else:
                raw.append(a)
                needs.append(False)
        record = any(needs) and is_grad_enabled()
        ctx.needs_input_grad = tuple(needs) if record else (False,) * len(args)
        out = ctx.forward(*raw, **kwargs)
        result = Tensor(out if isinstance(out, np.ndarray) else np.asarray(out))
        if record:
            edges = []
            shapes = []
            for a, need in zip(args, needs):
                if need:
                    # a leaf is its own edge (gradients accumulate into it); a non-leaf is reached via grad_fn
                    edges.append(a if a.grad_fn is None else a.grad_fn)
                    shapes.append(a.data.shape)
                else:
                    edges.append(None)
                    shapes.append(None)
            ctx.edges = tuple(edges)
            ctx.input_shapes = tuple(shapes)
            result.requires_grad = True
            result.grad_fn = ctx
        if observer is not None:
            observer.applied(cls, args, kwargs, result)
        return result

    @property
    def next_functions(self):
        """The graph edges, as torch names them: the Function or leaf Tensor behind each input."""
        return self.edges

    def release(self):
        """Drop everything saved for backward; keep only the graph links."""
        edges, shapes = self.edges, self.input_shapes
        self.__dict__.clear()
        self.edges, self.input_shapes = edges, shapes
        self.freed = True

    def name(self):
        return type(self).__name__ + "Backward"

    def __repr__(self):
        return f"<{self.name()}>"


from ..tensor import Tensor  # noqa: E402  (circular: Tensor routes operators to functions)
