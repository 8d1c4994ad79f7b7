"""Differentiable losses and dropout."""
import numpy as np

from ...kernels import activation as K
from ..function import Function


class CrossEntropy(Function):
    """Cross entropy on logits [M, C] against class indices [M] (torch's formula, incl. smoothing)."""

    def forward(self, logits, target, weight, ignore_index, reduction, label_smoothing):
        m, c = logits.shape
        logp = K.log_softmax(logits, 1)
        valid = target != ignore_index
        safe_t = np.where(valid, target, 0)
        w = np.ones(c, dtype=logits.dtype) if weight is None else weight.astype(logits.dtype)
        wt = w[safe_t] * valid
        picked = logp[np.arange(m), safe_t]
        loss = -(1 - label_smoothing) * wt * picked
        if label_smoothing:
            loss = loss - label_smoothing / c * (logp * w).sum(axis=1) * valid
        if reduction == "mean":
            denom = wt.sum()
            with np.errstate(invalid="ignore", divide="ignore"):  # every target ignored: NaN, as torch
                out = loss.sum() / denom
        elif reduction == "sum":
            denom = None
            out = loss.sum()
        else:
            denom = None
            out = loss
        self.save_for_backward(logp, safe_t, valid, w, wt)
        self.reduction, self.denom, self.eps = reduction, denom, label_smoothing
        return np.asarray(out, dtype=logits.dtype)

    def backward(self, g):
        logp, t, valid, w, wt = self.saved_tensors
        m, c = logp.shape
        if self.reduction == "mean":
            with np.errstate(invalid="ignore", divide="ignore"):
                scale = np.full(m, g / self.denom, dtype=logp.dtype)
        elif self.reduction == "sum":
            scale = np.full(m, g, dtype=logp.dtype)
        else:
            scale = g
        # d loss_i / d logp_ic
        dlogp = np.zeros_like(logp)
        dlogp[np.arange(m), t] = -(1 - self.eps) * wt
        if self.eps:
            dlogp -= (self.eps / c) * w[None, :] * valid[:, None]
        with np.errstate(invalid="ignore"):
            dlogp *= scale[:, None]
        dlogp[~valid] = 0  # ignored targets get exactly zero gradient, even when the mean is 0/0
        glogits = dlogp - np.exp(logp) * dlogp.sum(axis=1, keepdims=True)
        return glogits, None, None


class Dropout(Function):
    def forward(self, x, mask):
        self.save_for_backward(mask)
        return x * mask

    def backward(self, g):
        return (g * self.saved_tensors[0], None)
