"""The one oracle helper: run the same computation in excite and in torch, compare outputs and grads."""
import math

import numpy as np

import excite as ex

# float32 within 1e-5 and float64 within 1e-10, relative to the largest magnitude compared (at least 1)
TOL = {np.float32: dict(rtol=1e-5, atol=0.0), np.float64: dict(rtol=1e-10, atol=0.0)}
DTYPES = [np.float32, np.float64]


def check_op(torch, fn_ex, fn_torch, arrays, dtype=np.float32, grad=True, rtol=None, atol=None, seed=0):
    """Run ``fn_ex(*excite_tensors)`` and ``fn_torch(*torch_tensors)`` on the same ``arrays``.

    Float arrays are cast to ``dtype``; integer and bool arrays (targets, indices) are passed as
    they are. ``grad`` is a bool or one bool per array: the float inputs that require grad. Both
    sides backward the same random upstream gradient; the outputs (values, shape and dtype) and
    every input gradient must agree.
    """
    tol = dict(TOL[np.dtype(dtype).type])
    if rtol is not None:
        tol["rtol"] = rtol
    if atol is not None:
        tol["atol"] = atol
    arrays = [np.asarray(a) for a in arrays]
    arrays = [a.astype(dtype) if a.dtype.kind == "f" else a for a in arrays]
    wants = list(grad) if isinstance(grad, (list, tuple)) else [grad] * len(arrays)
    wants = [bool(w) and a.dtype.kind == "f" for w, a in zip(wants, arrays)]
    ex_in = [ex.tensor(a.copy(), requires_grad=w) for a, w in zip(arrays, wants)]
    th_in = [torch.tensor(a.copy(), requires_grad=w) for a, w in zip(arrays, wants)]
    out_ex = fn_ex(*ex_in)
    out_th = fn_torch(*th_in)
    assert isinstance(out_ex, ex.Tensor), f"excite returned {type(out_ex).__name__}, not a Tensor"
    assert_close(out_ex.numpy(), out_th.detach().numpy(), "output", exact_dtype=True, **tol)
    if any(wants):
        assert out_ex.requires_grad == out_th.requires_grad, "output requires_grad differs from torch"
    if any(wants) and out_th.requires_grad:
        upstream = np.random.default_rng(seed).standard_normal(out_th.shape).astype(out_ex.dtype)
        out_ex.backward(ex.tensor(upstream))
        out_th.backward(torch.tensor(upstream))
        for i, (a, b) in enumerate(zip(ex_in, th_in)):
            if not wants[i]:
                assert a.grad is None, f"input {i} does not require grad but got one"
                continue
            if b.grad is None:
                assert a.grad is None or not np.any(a.grad.numpy()), f"input {i}: excite has a grad, torch none"
                continue
            assert a.grad is not None, f"input {i}: torch has a grad, excite none"
            assert_close(a.grad.numpy(), b.grad.numpy(), f"grad of input {i}", exact_dtype=True, **tol)
    return out_ex, out_th


def assert_close(actual, expected, what="value", rtol=1e-5, atol=0.0, exact_dtype=False):
    """max|actual - expected| <= rtol * max(1, max|expected|) + atol; NaNs and infinities must match."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    if exact_dtype:
        assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    else:
        assert actual.dtype.kind == expected.dtype.kind, f"{what}: dtype {actual.dtype} vs {expected.dtype}"
    if actual.size == 0:
        return
    if actual.dtype.kind in "biu":
        assert np.array_equal(actual, expected), f"{what}: integer values differ"
        return
    a = actual.astype(np.float64)
    e = expected.astype(np.float64)
    assert np.array_equal(np.isnan(a), np.isnan(e)), f"{what}: NaN positions differ"
    finite = ~np.isnan(e)
    if not finite.any():
        return
    assert np.array_equal(a[~np.isfinite(e) & finite], e[~np.isfinite(e) & finite]), f"{what}: infinities differ"
    ok = np.isfinite(e)
    if not ok.any():
        return
    scale = max(1.0, float(np.max(np.abs(e[ok]))))
    err = float(np.max(np.abs(a[ok] - e[ok])))
    bound = rtol * scale + atol
    assert err <= bound, f"{what}: max abs error {err:.3g} > {bound:.3g} (scale {scale:.3g})"


def randn(*shape, seed=0):
    """Standard-normal float64 test data (check_op casts it to the dtype under test)."""
    return np.random.default_rng(seed).standard_normal(shape)


def away_from(x, kinks, margin=0.05):
    """Move the entries of ``x`` that lie within ``margin`` of a kink out of that band, so finite
    differences and float32 rounding never straddle a non-differentiable point."""
    x = np.array(x, dtype=np.float64)
    for k in kinks:
        near = np.abs(x - k) < margin
        x[near] = k + np.where(x[near] >= k, margin, -margin) * 2
    return x


def distinct(*shape, seed=0):
    """Values with no ties and gaps of at least 0.1 (for max/amax/max_pool away from ties)."""
    n = int(np.prod(shape))
    return np.random.default_rng(seed).permutation(n).reshape(shape) * 0.1 - n * 0.05


# the activations by definition, in float64 NumPy: the reference for compiled epilogues
REFERENCE_ACTIVATIONS = {
    None: lambda z: z,
    "relu": lambda z: np.maximum(z, 0),
    "relu6": lambda z: np.clip(z, 0, 6),
    "hardswish": lambda z: z * np.clip(z + 3, 0, 6) / 6,
    "hardsigmoid": lambda z: np.clip(z + 3, 0, 6) / 6,
    "silu": lambda z: z / (1 + np.exp(-z)),
    "sigmoid": lambda z: 1 / (1 + np.exp(-z)),
    "gelu": lambda z: z * 0.5 * (1 + np.vectorize(math.erf)(z / np.sqrt(2))),
}
