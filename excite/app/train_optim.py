"""The optimizer and the learning-rate schedule of a training run."""
from .defaults import OPTIMIZERS


# ----- model, optimizer, schedule ----------------------------------------------------------------
def build_optimizer(config, params):
    from .. import optim

    extra = OPTIMIZERS[config.optimizer][-1]
    cls = {"sgd": optim.SGD, "rmsprop": optim.RMSprop, "adam": optim.Adam, "adamw": optim.AdamW}[config.optimizer]
    return cls(params, lr=config.lr, weight_decay=config.weight_decay, **extra)


def build_scheduler(optimizer, total_steps, warmup):
    """Linear warm-up over ``warmup`` steps, then cosine decay to zero at ``total_steps``.

    Stepped once per batch, so a resumed run picks up the schedule exactly where it stopped.
    """
    from ..optim import lr_scheduler

    warmup = min(int(warmup), max(0, total_steps - 1))
    cosine = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup))
    if warmup == 0:
        return cosine
    ramp = lr_scheduler.LinearLR(optimizer, start_factor=0.04, total_iters=warmup)
    return lr_scheduler.SequentialLR(optimizer, [ramp, cosine], milestones=[warmup])
