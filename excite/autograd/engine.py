"""The backward engine: iterative topological order, gradient accumulation, graph freeing."""
import threading

import numpy as np

from ..errors import ExciteError, ShapeError, shape_str
from ..kernels import buffers


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


def _sum(a, b):
    """a + b for two gradients of one tensor (a reused buffer when they are large and alike)."""
    if a.shape == b.shape and a.dtype == b.dtype and a.nbytes >= buffers.MIN_BYTES:
        return np.add(a, b, out=buffers.empty_like(a))
    return a + b


def _is_function(edge):
    return edge is not None and not isinstance(edge, Tensor)


def topological_order(root_fn):
    """Functions reachable from ``root_fn``, each before the functions that produced its inputs.

    Iterative depth-first search: graphs 100,000 nodes deep must not hit the recursion limit.
    """
    order = []
    visited = {id(root_fn)}
    stack = [(root_fn, iter(root_fn.edges))]
    while stack:
        fn, children = stack[-1]
        for child in children:
            if _is_function(child) and id(child) not in visited:
                visited.add(id(child))
                stack.append((child, iter(child.edges)))
                break
        else:
            stack.pop()
            order.append(fn)
    order.reverse()
    return order


# backward passes in several threads may share leaves (a module's parameters): the
# read-modify-write of .grad must not lose one thread's contribution
_leaf_lock = threading.Lock()


def _accumulate_leaf(tensor, grad):
    if grad.dtype != tensor.data.dtype:
        grad = grad.astype(tensor.data.dtype)
    with _leaf_lock:
        if tensor.grad is None:
            # own the memory: a backward may hand the same (or a read-only broadcast) array to several inputs
            tensor.grad = Tensor(np.array(grad, copy=True))
        else:
            tensor.grad.data = tensor.grad.data + grad


def _root_gradient(root, gradient):
    if gradient is None:
        if root.data.size != 1:
            raise ExciteError(
                f"grad can be implicitly created only for scalar outputs; backward() on a tensor of "
                f"shape {shape_str(root.shape)} needs gradient= of the same shape"
            )
        return np.ones_like(root.data)
    grad = gradient.data if isinstance(gradient, Tensor) else np.asarray(gradient)
    if grad.shape != root.data.shape:
        raise ShapeError(
            f"backward: gradient= must have the output's shape {shape_str(root.shape)}, "
            f"got {shape_str(grad.shape)}"
        )
    return grad.astype(root.data.dtype, copy=False)


# called with no arguments at the end of every backward pass (excite.distributed's gradient averaging)
_post_backward_hooks = []


def register_post_backward_hook(hook):
    """Call ``hook()`` after every backward pass; returns a handle whose ``remove()`` unregisters it."""
    _post_backward_hooks.append(hook)

    class _Handle:
        def remove(self):
            if hook in _post_backward_hooks:
                _post_backward_hooks.remove(hook)

    return _Handle()


def run_backward(root, gradient=None, retain_graph=False):
    """Compute d(root)/d(leaf) for every leaf that requires grad and accumulate into ``.grad``."""
    _run_backward(root, gradient, retain_graph)
    for hook in list(_post_backward_hooks):
        hook()


def _run_backward(root, gradient, retain_graph):
    if not root.requires_grad:
        raise ExciteError(
            "backward() called on a tensor that does not require grad and has no grad_fn; "
            "create the inputs with requires_grad=True (and outside no_grad())"
        )
    grad = _root_gradient(root, gradient)
    if root.grad_fn is None:
        _accumulate_leaf(root, grad)
        return

    order = topological_order(root.grad_fn)
    if any(fn.freed for fn in order):
        raise ExciteError(
            "Trying to backward through the graph a second time (or to use saved arrays after "
            "they were freed); pass retain_graph=True to the first backward() if you need to "
            "backward twice"
        )
    grads = {id(root.grad_fn): grad}
    for fn in order:
        g = grads.pop(id(fn), None)
        if g is None:
            if not retain_graph:
                fn.release()
            continue
        ref = fn.__dict__.get("retained_output")
        if ref is not None and ref() is not None:
            _accumulate_leaf(ref(), g)
        input_grads = fn.backward(g)
        if not isinstance(input_grads, tuple):
            input_grads = (input_grads,)
        if not retain_graph:
            fn.release()
        for edge, shape, gi in zip(fn.edges, fn.input_shapes, input_grads):
            if edge is None or gi is None:
                continue
            gi = unbroadcast(np.asarray(gi), shape)
            if isinstance(edge, Tensor):
                _accumulate_leaf(edge, gi)
            else:
                key = id(edge)
                prev = grads.get(key)
                grads[key] = gi if prev is None else _sum(prev, gi)


from ..tensor import Tensor  # noqa: E402  (circular: Tensor.backward calls into the engine)
