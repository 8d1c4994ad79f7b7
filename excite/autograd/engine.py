"""The backward engine: iterative topological order, gradient accumulation, graph freeing."""
import numpy as np

from ..errors import ExciteError, ShapeError, shape_str


def unbroadcast(grad, shape):
    """Sum ``grad`` over the axes NumPy broadcasting added or stretched to reach ``shape``."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    axes = tuple(i for i, s in enumerate(shape) if s == 1 and grad.shape[i] != 1)
    if axes:
        grad = grad.sum(axis=axes, keepdims=True)
    return grad.reshape(shape)


def topological_order(root_fn):
    """Functions reachable from ``root_fn``, each before the functions that produced its inputs."""
    order = []
    visited = set()
    stack = [(root_fn, False)]
    while stack:
        fn, done = stack.pop()
        if done:
            order.append(fn)
            continue
        if id(fn) in visited:
            continue
        visited.add(id(fn))
        stack.append((fn, True))
        for t in fn.inputs:
            if t is not None and t.grad_fn is not None and id(t.grad_fn) not in visited:
                stack.append((t.grad_fn, False))
    order.reverse()
    return order


def _accumulate_leaf(tensor, grad):
    from ..tensor import Tensor

    if grad.dtype != tensor.data.dtype:
        grad = grad.astype(tensor.data.dtype)
    if tensor.grad is None:
        # own the memory: a backward may hand the same array to several inputs
        tensor.grad = Tensor(np.array(grad, copy=True))
    else:
        tensor.grad.data = tensor.grad.data + grad


def run_backward(root, gradient=None, retain_graph=False):
    """Compute d(root)/d(leaf) for every leaf that requires grad and accumulate into ``.grad``."""
    from ..tensor import Tensor

    if not root.requires_grad:
        raise ExciteError(
            "backward() called on a tensor that does not require grad and has no grad_fn; "
            "create the inputs with requires_grad=True (and outside no_grad())"
        )
    if gradient is None:
        if root.data.size != 1:
            raise ExciteError(
                f"grad can be implicitly created only for scalar outputs; backward() on a tensor of "
                f"shape {shape_str(root.shape)} needs gradient= of the same shape"
            )
        grad = np.ones_like(root.data)
    else:
        grad = gradient.data if isinstance(gradient, Tensor) else np.asarray(gradient)
        if grad.shape != root.data.shape:
            raise ShapeError(
                f"backward: gradient= must have the output's shape {shape_str(root.shape)}, "
                f"got {shape_str(grad.shape)}"
            )
        grad = grad.astype(root.data.dtype, copy=False)
    if root.grad_fn is None:
        _accumulate_leaf(root, grad)
        return

    order = topological_order(root.grad_fn)
    grads = {id(root.grad_fn): grad}
    for fn in order:
        g = grads.pop(id(fn), None)
        if g is None:
            continue
        if fn.freed:
            raise ExciteError(
                "Trying to backward through the graph a second time (or to use saved arrays after "
                "they were freed); pass retain_graph=True to the first backward() if you need to "
                "backward twice"
            )
        ref = fn.__dict__.get("retained_output")
        if ref is not None and ref() is not None:
            _accumulate_leaf(ref(), g)
        input_grads = fn.backward(g)
        if not isinstance(input_grads, tuple):
            input_grads = (input_grads,)
        for t, gi in zip(fn.inputs, input_grads):
            if t is None or gi is None or not t.requires_grad:
                continue
            gi = unbroadcast(np.asarray(gi), t.data.shape)
            if t.grad_fn is None:
                _accumulate_leaf(t, gi)
            else:
                key = id(t.grad_fn)
                prev = grads.get(key)
                grads[key] = gi if prev is None else prev + gi
        if not retain_graph:
            fn.release()
