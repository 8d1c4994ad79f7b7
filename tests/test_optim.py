"""Optimizers against torch.optim: same params and grads, step for step; state dicts both ways."""
import numpy as np
import pytest

import excite as ex
from excite.errors import InvalidArgumentError
from excite.optim import SGD, Adam, AdamW, RMSprop
from oracle import assert_close

SHAPES = [(3, 4), (5,), (2, 1, 3)]
STEPS = 20

CASES = [
    ("SGD", dict(lr=0.1)),
    ("SGD", dict(lr=0.05, momentum=0.9)),
    ("SGD", dict(lr=0.05, momentum=0.9, dampening=0.1, weight_decay=1e-2)),
    ("SGD", dict(lr=0.05, momentum=0.9, nesterov=True, weight_decay=1e-3)),
    ("SGD", dict(lr=0.02, momentum=0.5, maximize=True)),
    ("RMSprop", dict()),
    ("RMSprop", dict(lr=0.01, momentum=0.9)),
    ("RMSprop", dict(lr=0.01, centered=True)),
    ("RMSprop", dict(lr=0.005, alpha=0.9, eps=1e-3, weight_decay=1e-2, momentum=0.9, centered=True)),
    ("RMSprop", dict(lr=0.01, maximize=True, weight_decay=1e-3)),
    ("Adam", dict()),
    ("Adam", dict(lr=0.01, amsgrad=True)),
    ("Adam", dict(lr=0.01, weight_decay=1e-2)),
    ("Adam", dict(lr=0.02, betas=(0.8, 0.99), eps=1e-6, maximize=True)),
    ("Adam", dict(lr=0.01, weight_decay=0.1, decoupled_weight_decay=True)),
    ("AdamW", dict(lr=0.01)),
    ("AdamW", dict(lr=0.01, weight_decay=0.1, amsgrad=True, betas=(0.85, 0.95))),
]
CLASSES = {"SGD": SGD, "RMSprop": RMSprop, "Adam": Adam, "AdamW": AdamW}


def _initial(dtype, seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(s).astype(dtype) for s in SHAPES]


def _grads(step, dtype):
    """The gradients of step ``step``; the last parameter gets none on odd steps (must be skipped)."""
    rng = np.random.default_rng(1000 + step)
    grads = [rng.standard_normal(s).astype(dtype) for s in SHAPES]
    if step % 2 == 1:
        grads[-1] = None
    return grads


def _groups(params, grouped):
    if not grouped:
        return params
    # different lrs per group; the second group takes the optimizer's defaults
    return [{"params": [params[0]], "lr": 0.003}, {"params": params[1:]}]


class Pair:
    """The same optimizer in excite and torch over the same parameter values."""

    def __init__(self, torch, name, kwargs, dtype=np.float32, grouped=False, values=None):
        self.torch = torch
        values = values if values is not None else _initial(dtype)
        self.ex_params = [ex.tensor(v.copy(), requires_grad=True) for v in values]
        self.th_params = [torch.tensor(v.copy(), requires_grad=True) for v in values]
        self.ex_opt = CLASSES[name](_groups(self.ex_params, grouped), **kwargs)
        self.th_opt = getattr(torch.optim, name)(_groups(self.th_params, grouped), **kwargs)
        self.dtype = dtype

    def step(self, step):
        for pe, pt, g in zip(self.ex_params, self.th_params, _grads(step, self.dtype)):
            pe.grad = None if g is None else ex.tensor(g.copy())
            pt.grad = None if g is None else self.torch.tensor(g.copy())
        self.ex_opt.step()
        self.th_opt.step()

    def compare(self, what):
        tol = 1e-6 if self.dtype == np.float32 else 1e-12
        for i, (pe, pt) in enumerate(zip(self.ex_params, self.th_params)):
            assert pe.dtype == np.dtype(self.dtype), f"{what}: param {i} dtype changed to {pe.dtype}"
            assert_close(pe.numpy(), pt.detach().numpy(), f"{what} param {i}", rtol=tol, atol=tol)


@pytest.mark.parametrize("grouped", [False, True], ids=["one-group", "two-groups"])
@pytest.mark.parametrize("name,kwargs", CASES, ids=[f"{n}-{i}" for i, (n, _) in enumerate(CASES)])
def test_matches_torch_step_for_step(torch, name, kwargs, grouped):
    pair = Pair(torch, name, kwargs, grouped=grouped)
    for step in range(STEPS):
        pair.step(step)
        pair.compare(f"{name}{kwargs} step {step}")


@pytest.mark.parametrize("name,kwargs", [CASES[3], CASES[8], CASES[11], CASES[16]], ids=lambda v: str(v))
def test_matches_torch_in_float64(torch, name, kwargs):
    pair = Pair(torch, name, kwargs, dtype=np.float64, grouped=True)
    for step in range(STEPS):
        pair.step(step)
    pair.compare(f"{name}{kwargs} float64")


def _torch_sd_to_numpy(torch, sd):
    def conv(v):
        return v.detach().numpy().copy() if isinstance(v, torch.Tensor) else v
    return {"state": {k: {n: conv(v) for n, v in s.items()} for k, s in sd["state"].items()},
            "param_groups": [dict(g) for g in sd["param_groups"]]}


def _excite_sd_to_torch(torch, sd):
    def conv(v):
        return torch.tensor(v.numpy().copy()) if isinstance(v, ex.Tensor) else v
    return {"state": {k: {n: conv(v) for n, v in s.items()} for k, s in sd["state"].items()},
            "param_groups": [dict(g) for g in sd["param_groups"]]}


@pytest.mark.parametrize("name,kwargs", [CASES[2], CASES[8], CASES[11], CASES[16]], ids=lambda v: str(v))
def test_state_dict_has_torchs_layout(torch, name, kwargs):
    pair = Pair(torch, name, kwargs, grouped=True)
    for step in range(5):
        pair.step(step)
    ours, theirs = pair.ex_opt.state_dict(), pair.th_opt.state_dict()
    assert ours["param_groups"] == theirs["param_groups"]
    assert sorted(ours["state"]) == sorted(theirs["state"])
    for index, values in theirs["state"].items():
        assert sorted(ours["state"][index]) == sorted(values), f"state keys of param {index}"
        for key, value in values.items():
            mine = ours["state"][index][key]
            assert isinstance(mine, ex.Tensor)
            assert mine.dtype == np.dtype(str(value.dtype).replace("torch.", "")), f"{key} dtype"
            assert_close(mine.numpy(), value.numpy(), f"state[{index}][{key}]", rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name,kwargs", [CASES[3], CASES[9], CASES[12], CASES[16]], ids=lambda v: str(v))
def test_state_dict_round_trip_continues_identically(torch, name, kwargs):
    pair = Pair(torch, name, kwargs, grouped=True)
    for step in range(10):
        pair.step(step)
    saved = pair.ex_opt.state_dict()
    # a fresh optimizer over fresh parameters holding the current values, configured differently
    fresh = [ex.tensor(p.numpy().copy(), requires_grad=True) for p in pair.ex_params]
    other = dict(kwargs, lr=123.0)
    restored = CLASSES[name](_groups(fresh, True), **other)
    restored.load_state_dict(saved)
    assert restored.param_groups[0]["lr"] == 0.003
    pair.ex_params, pair.ex_opt = fresh, restored
    for step in range(10, STEPS):
        pair.step(step)
        pair.compare(f"{name} after reload, step {step}")


@pytest.mark.parametrize("name,kwargs", [CASES[4], CASES[8], CASES[13], CASES[15]], ids=lambda v: str(v))
def test_state_dicts_cross_load_between_excite_and_torch(torch, name, kwargs):
    pair = Pair(torch, name, kwargs, grouped=True)
    for step in range(6):
        pair.step(step)
    # swap states: excite continues from torch's, torch from excite's
    from_torch = _torch_sd_to_numpy(torch, pair.th_opt.state_dict())
    from_excite = _excite_sd_to_torch(torch, pair.ex_opt.state_dict())
    pair.ex_opt.load_state_dict(from_torch)
    pair.th_opt.load_state_dict(from_excite)
    for step in range(6, STEPS):
        pair.step(step)
        pair.compare(f"{name} after cross-load, step {step}")


def test_zero_grad_set_to_none_and_zeros():
    p = ex.tensor(np.ones(3, np.float32), requires_grad=True)
    opt = SGD([p], lr=0.1)
    p.grad = ex.tensor(np.full(3, 2.0, np.float32))
    opt.zero_grad(set_to_none=False)
    assert p.grad is not None and np.array_equal(p.grad.numpy(), np.zeros(3, np.float32))
    opt.zero_grad()
    assert p.grad is None
    before = p.numpy().copy()
    opt.step()  # no grad: nothing moves
    assert np.array_equal(p.numpy(), before)


def test_step_calls_closure_with_grad_enabled_and_returns_loss():
    p = ex.tensor(np.array([2.0], np.float32), requires_grad=True)
    opt = SGD([p], lr=0.25)

    def closure():
        opt.zero_grad()
        loss = (p * p).sum()
        loss.backward()
        return loss

    with ex.no_grad():
        loss = opt.step(closure)
    assert loss.item() == 4.0
    assert p.numpy()[0] == pytest.approx(2.0 - 0.25 * 4.0)


def test_param_groups_defaults_and_add_param_group():
    a, b = (ex.tensor(np.zeros(2, np.float32), requires_grad=True) for _ in range(2))
    opt = Adam([a], lr=0.1)
    opt.add_param_group({"params": b, "betas": (0.5, 0.6)})
    assert opt.param_groups[1]["lr"] == 0.1 and opt.param_groups[1]["betas"] == (0.5, 0.6)
    assert opt.param_groups[1]["params"] == [b]
    with pytest.raises(InvalidArgumentError, match="more than one parameter group"):
        opt.add_param_group({"params": [a]})
    with pytest.raises(InvalidArgumentError, match="empty parameter list"):
        SGD([], lr=0.1)
    with pytest.raises(InvalidArgumentError, match="single Tensor"):
        SGD(a, lr=0.1)
    with pytest.raises(InvalidArgumentError, match="Nesterov"):
        SGD([a], lr=0.1, nesterov=True)
    with pytest.raises(InvalidArgumentError, match="beta parameter at index 1"):
        Adam([a], betas=(0.9, 1.0))


def test_named_parameters_are_kept_as_param_names(torch):
    a = ex.tensor(np.zeros(2, np.float32), requires_grad=True)
    ta = torch.zeros(2, requires_grad=True)
    ours = SGD([("layer.weight", a)], lr=0.1).state_dict()
    theirs = torch.optim.SGD([("layer.weight", ta)], lr=0.1).state_dict()
    assert ours["param_groups"] == theirs["param_groups"]


def test_load_state_dict_rejects_mismatched_groups():
    a, b = (ex.tensor(np.zeros(2, np.float32), requires_grad=True) for _ in range(2))
    saved = SGD([a, b], lr=0.1).state_dict()
    with pytest.raises(InvalidArgumentError, match="has 2 parameters"):
        SGD([a], lr=0.1).load_state_dict(saved)
    with pytest.raises(InvalidArgumentError, match="2 parameter groups|1 parameter groups"):
        SGD([{"params": [a]}, {"params": [b]}], lr=0.1).load_state_dict(saved)
