"""NumPy twins of `compiled.channel_reduce`: per-image channel means and SE gates on [N, P, C] or [N, C, P]."""
import numpy as np

from ._activation import activate

_QUIET = np.errstate(all="ignore")  # like the kernels: no floating-point warnings (inf, NaN in user data)


@_QUIET
def channel_means(x, out):
    """out[n, c] = mean over pixels p of x[n, p, c] (summed in float64)."""
    out[...] = x.sum(axis=1, dtype=np.float64) / x.shape[1]


@_QUIET
def se_inference_cl(x, w1t, b1, w2t, b2, out, kind1, kind2):
    """out[n, p, c] = x[n, p, c] * act2(b2 + act1(b1 + mean_p(x[n]) @ w1t) @ w2t)[c] (the mean and both layers in float64)."""
    mean = (x.sum(axis=1, dtype=np.float64) / x.shape[1]).astype(x.dtype)
    f64 = np.float64
    hidden = activate((mean.astype(f64) @ w1t.astype(f64) + b1).astype(x.dtype), kind1)
    gate = activate((hidden.astype(f64) @ w2t.astype(f64) + b2).astype(x.dtype), kind2)
    np.multiply(x, gate[:, None, :], out=out)


@_QUIET
def gate_forward(x, gate, out):
    """out[n, p, c] = x[n, p, c] * gate[n, c]."""
    np.multiply(x, gate[:, None, :], out=out)


@_QUIET
def gated_sums(grad, x, out):
    """out[n, c] = sum over pixels of grad[n, p, c] * x[n, p, c] (float64)."""
    for n in range(x.shape[0]):
        out[n] = np.einsum("pc,pc->c", grad[n].astype(np.float64), x[n].astype(np.float64))


@_QUIET
def gate_backward_input(grad, gate, pooled_grad, out):
    """out[n, p, c] = grad[n, p, c] * gate[n, c] + pooled_grad[n, c] (pooled_grad already divided by P)."""
    np.multiply(grad, gate[:, None, :], out=out)
    out += pooled_grad[:, None, :]


@_QUIET
def plane_means(x, out):
    """out[n, c] = mean over p of x[n, c, p] (summed in float64)."""
    out[...] = x.sum(axis=2, dtype=np.float64) / x.shape[2]


@_QUIET
def plane_gate(x, gate, out):
    """out[n, c, p] = x[n, c, p] * gate[n, c]."""
    np.multiply(x, gate[:, :, None], out=out)


@_QUIET
def plane_gated_sums(grad, x, out):
    """out[n, c] = sum over p of grad[n, c, p] * x[n, c, p] (float64)."""
    for n in range(x.shape[0]):
        out[n] = np.einsum("cp,cp->c", grad[n].astype(np.float64), x[n].astype(np.float64))


@_QUIET
def plane_gate_backward_input(grad, gate, pooled_grad, out):
    """out[n, c, p] = grad[n, c, p] * gate[n, c] + pooled_grad[n, c] (pooled_grad already divided by P)."""
    np.multiply(grad, gate[:, :, None], out=out)
    out += pooled_grad[:, :, None]
