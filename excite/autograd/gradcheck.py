"""Finite-difference check of analytic gradients, in float64."""
import numpy as np

from ..errors import GradcheckError, InvalidArgumentError
from .grad_mode import enable_grad


def _outputs(fn, inputs):
    with enable_grad():
        out = fn(*inputs)
    return out if isinstance(out, (tuple, list)) else (out,)


def gradcheck(fn, inputs, eps=1e-6, atol=1e-5, rtol=1e-3):
    """Compare the Jacobian from backward() with central differences; raise on the worst mismatch.

    ``inputs`` is a tensor or a tuple; the float64 tensors among them that require grad are
    checked. Returns True when every entry satisfies |analytic - numeric| <= atol + rtol*|numeric|.
    """
    from ..tensor import Tensor

    if isinstance(inputs, Tensor):
        inputs = (inputs,)
    inputs = tuple(inputs)
    checked = [i for i, t in enumerate(inputs) if isinstance(t, Tensor) and t.requires_grad]
    if not checked:
        raise InvalidArgumentError("gradcheck: no input requires grad")
    for i in checked:
        if inputs[i].dtype != np.float64:
            raise InvalidArgumentError(
                f"gradcheck: input {i} must be float64 for finite differences, got {inputs[i].dtype}"
            )
    outs = [o for o in _outputs(fn, inputs) if isinstance(o, Tensor) and o.requires_grad]
    worst = None
    for k, out in enumerate(outs):
        out_size = out.data.size
        analytic = {i: np.zeros((out_size, inputs[i].data.size)) for i in checked}
        for j in range(out_size):
            for i in checked:
                inputs[i].grad = None
            seed = np.zeros(out.data.shape)
            seed.reshape(-1)[j] = 1.0
            out.backward(seed, retain_graph=True)
            for i in checked:
                g = inputs[i].grad
                if g is not None:
                    analytic[i][j] = g.data.reshape(-1)
        for i in checked:
            x = inputs[i].data
            numeric = np.zeros_like(analytic[i])
            # perturb through multi-indices: a flat reshape of a non-contiguous array would be a copy
            for e, at in enumerate(np.ndindex(x.shape)):
                orig = x[at]
                x[at] = orig + eps
                plus = _outputs(fn, inputs)[k].data.reshape(-1).astype(np.float64)
                x[at] = orig - eps
                minus = _outputs(fn, inputs)[k].data.reshape(-1).astype(np.float64)
                x[at] = orig
                numeric[:, e] = (plus - minus) / (2 * eps)
            err = np.abs(analytic[i] - numeric) - (atol + rtol * np.abs(numeric))
            if err.size and err.max() > 0:
                j, e = np.unravel_index(np.argmax(err), err.shape)
                cand = (err[j, e], k, i, j, e, analytic[i][j, e], numeric[j, e])
                if worst is None or cand[0] > worst[0]:
                    worst = cand
    for i in checked:
        inputs[i].grad = None
    if worst is not None:
        _, k, i, j, e, a, n = worst
        raise GradcheckError(
            f"gradcheck: Jacobian mismatch for output {k} w.r.t. input {i}: at output element {j}, "
            f"input element {e}, analytic {a:.10g} vs numerical {n:.10g} "
            f"(atol={atol}, rtol={rtol})"
        )
    return True
