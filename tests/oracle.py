"""The one oracle helper: run the same computation in excite and in torch, compare outputs and grads."""
import numpy as np

import excite as ex

TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-10)}


def check_op(torch, fn_ex, fn_torch, arrays, dtype=np.float32, grad=True, rtol=None, atol=None, seed=0):
    """Run ``fn_ex(*excite_tensors)`` and ``fn_torch(*torch_tensors)`` on the same ``arrays``.

    Float arrays require grad when ``grad``; both sides backward the same random upstream
    gradient; outputs and every input gradient must agree (float32 ~1e-5, float64 ~1e-10,
    relative to the largest magnitude).
    """
    tol = dict(TOL[np.dtype(dtype).type])
    if rtol is not None:
        tol["rtol"] = rtol
    if atol is not None:
        tol["atol"] = atol
    arrays = [np.asarray(a) for a in arrays]
    arrays = [a.astype(dtype) if a.dtype.kind == "f" else a for a in arrays]
    ex_in = [ex.tensor(a.copy(), requires_grad=grad and a.dtype.kind == "f") for a in arrays]
    th_in = [torch.tensor(a.copy(), requires_grad=grad and a.dtype.kind == "f") for a in arrays]
    out_ex = fn_ex(*ex_in)
    out_th = fn_torch(*th_in)
    assert_close(out_ex.numpy(), out_th.detach().numpy(), "output", **tol)
    if grad and out_th.requires_grad:
        g = np.random.default_rng(seed).standard_normal(out_th.shape).astype(out_ex.dtype)
        out_ex.backward(ex.tensor(g))
        out_th.backward(torch.tensor(g))
        for i, (a, b) in enumerate(zip(ex_in, th_in)):
            if b.grad is None:
                assert a.grad is None or np.all(a.grad.numpy() == 0), f"input {i}: excite has a grad, torch none"
                continue
            assert a.grad is not None, f"input {i}: torch has a grad, excite none"
            assert_close(a.grad.numpy(), b.grad.numpy(), f"grad of input {i}", **tol)
    return out_ex, out_th


def assert_close(actual, expected, what="value", rtol=1e-5, atol=1e-5):
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype or actual.dtype.kind == expected.dtype.kind, (
        f"{what}: dtype {actual.dtype} != {expected.dtype}")
    if actual.size == 0:
        return
    scale = max(1.0, float(np.max(np.abs(expected))))
    err = float(np.max(np.abs(actual.astype(np.float64) - expected.astype(np.float64))))
    assert err <= atol * scale + rtol * scale, f"{what}: max abs error {err:.3g} (scale {scale:.3g})"
