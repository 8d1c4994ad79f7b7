"""LR schedules against torch.optim.lr_scheduler: the same lrs epoch by epoch, state dicts, resume."""
import numpy as np
import pytest

import excite as ex
from excite.errors import InvalidArgumentError
from excite.optim import SGD, lr_scheduler

EPOCHS = 20
LRS = (0.1, 0.02)  # two param groups with different lrs


def _build(lib, make):
    """An SGD over two groups with LRS and the scheduler ``make(lib.optim.lr_scheduler, opt)``."""
    if lib is ex:
        params = [ex.tensor(np.zeros(2, np.float32), requires_grad=True) for _ in LRS]
        opt = SGD([{"params": [p], "lr": lr} for p, lr in zip(params, LRS)], lr=1.0)
        return opt, make(lr_scheduler, opt)
    params = [lib.zeros(2, requires_grad=True) for _ in LRS]
    opt = lib.optim.SGD([{"params": [p], "lr": lr} for p, lr in zip(params, LRS)], lr=1.0)
    return opt, make(lib.optim.lr_scheduler, opt)


SCHEDULES = {
    "step": lambda m, o: m.StepLR(o, step_size=3, gamma=0.5),
    "multistep": lambda m, o: m.MultiStepLR(o, milestones=[2, 5, 5, 9], gamma=0.3),
    "exponential": lambda m, o: m.ExponentialLR(o, gamma=0.9),
    "linear-warmup": lambda m, o: m.LinearLR(o, start_factor=0.1, total_iters=4),
    "linear-decay": lambda m, o: m.LinearLR(o, start_factor=1.0, end_factor=0.2, total_iters=10),
    "cosine": lambda m, o: m.CosineAnnealingLR(o, T_max=7, eta_min=1e-4),
    "cosine-long": lambda m, o: m.CosineAnnealingLR(o, T_max=30),
    "warmup-cosine": lambda m, o: m.SequentialLR(
        o, [m.LinearLR(o, start_factor=0.01, total_iters=5), m.CosineAnnealingLR(o, T_max=15, eta_min=1e-5)], [5]),
    "three-phase": lambda m, o: m.SequentialLR(
        o, [m.LinearLR(o, start_factor=0.5, total_iters=3), m.ExponentialLR(o, gamma=0.8),
            m.StepLR(o, step_size=2, gamma=0.5)], [4, 11]),
}


def _assert_lrs(ours, theirs, what):
    assert len(ours) == len(theirs), what
    for a, b in zip(ours, theirs):
        assert a == pytest.approx(b, rel=1e-12, abs=0), f"{what}: {ours} vs {theirs}"


def _run(torch, make, epochs, ex_pair=None, th_pair=None, start=0):
    ex_opt, ex_sched = ex_pair or _build(ex, make)
    th_opt, th_sched = th_pair or _build(torch, make)
    for epoch in range(start, epochs):
        _assert_lrs(ex_sched.get_last_lr(), th_sched.get_last_lr(), f"epoch {epoch} get_last_lr")
        _assert_lrs([g["lr"] for g in ex_opt.param_groups], [g["lr"] for g in th_opt.param_groups],
                    f"epoch {epoch} group lr")
        ex_opt.step()
        th_opt.step()
        ex_sched.step()
        th_sched.step()
    return (ex_opt, ex_sched), (th_opt, th_sched)


@pytest.mark.parametrize("name", SCHEDULES)
def test_matches_torch_epoch_by_epoch(torch, name):
    _run(torch, SCHEDULES[name], EPOCHS)


@pytest.mark.parametrize("name", [n for n in SCHEDULES if not n.startswith(("warmup", "three"))])
def test_state_dict_keys_and_values_match_torch(torch, name):
    (_, ours), (_, theirs) = _run(torch, SCHEDULES[name], 6)
    ours, theirs = ours.state_dict(), theirs.state_dict()
    assert sorted(ours) == sorted(theirs)
    for key, value in theirs.items():
        assert ours[key] == (pytest.approx(value, rel=1e-12) if key in ("base_lrs", "_last_lr") else value), key


@pytest.mark.parametrize("name", ["step", "cosine", "warmup-cosine", "three-phase"])
def test_resume_from_state_dicts_continues_like_torch(torch, name):
    make = SCHEDULES[name]
    (ex_opt, ex_sched), th_pair = _run(torch, make, 8)
    opt_state, sched_state = ex_opt.state_dict(), ex_sched.state_dict()
    # fresh optimizer and scheduler, as a resumed training run builds them, then restored
    new_opt, new_sched = _build(ex, make)
    new_sched.load_state_dict(sched_state)
    new_opt.load_state_dict(opt_state)
    _run(torch, make, EPOCHS, ex_pair=(new_opt, new_sched), th_pair=th_pair, start=8)


@pytest.mark.parametrize("name", ["step", "multistep", "exponential", "linear-warmup", "cosine"])
def test_step_with_epoch_uses_torchs_closed_form(torch, name):
    (_, ours), (_, theirs) = _run(torch, SCHEDULES[name], 2)
    for epoch in (5, 3, 12):
        with pytest.warns(UserWarning):
            theirs.step(epoch)
        ours.step(epoch)
        _assert_lrs(ours.get_last_lr(), theirs.get_last_lr(), f"step({epoch})")


def test_cosine_recursive_form_differs_from_closed_form_like_torch(torch):
    # after T_max the recursion's numbers and the closed form part ways; we follow the recursion
    (_, ours), (_, theirs) = _run(torch, SCHEDULES["cosine"], 16)
    closed = ours._get_closed_form_lr()
    assert ours.get_last_lr() == pytest.approx(theirs.get_last_lr(), rel=1e-12)
    assert ours.get_last_lr() != closed


def test_resuming_with_last_epoch_needs_initial_lr():
    p = ex.tensor(np.zeros(1, np.float32), requires_grad=True)
    with pytest.raises(InvalidArgumentError, match="initial_lr"):
        lr_scheduler.StepLR(SGD([p], lr=0.1), step_size=2, last_epoch=3)
    with pytest.raises(InvalidArgumentError, match="not an Optimizer"):
        lr_scheduler.StepLR(object(), step_size=2)


def test_sequential_lr_validates_its_arguments():
    p = ex.tensor(np.zeros(1, np.float32), requires_grad=True)
    opt, other = SGD([p], lr=0.1), SGD([ex.tensor(np.zeros(1, np.float32), requires_grad=True)], lr=0.1)
    a, b = lr_scheduler.ExponentialLR(opt, 0.9), lr_scheduler.ExponentialLR(other, 0.9)
    with pytest.raises(InvalidArgumentError, match="same optimizer"):
        lr_scheduler.SequentialLR(opt, [a, b], [3])
    with pytest.raises(InvalidArgumentError, match="one milestone fewer"):
        lr_scheduler.SequentialLR(opt, [a], [3])
