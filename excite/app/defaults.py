"""Training hyperparameters chosen from the optimizer, the data set's size and whether the run fine-tunes.

Each rule is a published recipe scaled to the batch actually used: the learning rate grows linearly with the
batch for SGD and RMSprop (Goyal et al., 2017) and with its square root for Adam/AdamW (as timm scales
adaptive optimizers). Fine-tuning starts from weights that already work, so it takes a rate about ten times
lower and a shorter warm-up, as torchvision's and timm's fine-tuning references do. A frozen backbone is the
exception: only a new classifier trains, from scratch, so it takes the from-scratch rate (linear probing).
"""
import dataclasses
import math

REFERENCE_BATCH = 64

# name -> (lr from scratch at batch 64, lr fine-tuning at batch 64, weight decay, lr scaling, constructor extras).
# From scratch: SGD is torchvision's reference 0.1 at batch 256, RMSprop its MobileNetV3 recipe (0.064 at
# 1024), AdamW 2e-3 (EfficientNet-B0 on a few dozen photos diverges at 3.5e-3 at batch 8 and trains at 1e-3).
# Fine-tuning: AdamW 1e-3, SGD 0.01 at batch 64.
OPTIMIZERS = {
    "sgd": (0.025, 0.01, 5e-5, "linear", dict(momentum=0.9, nesterov=True)),
    "rmsprop": (0.004, 0.0004, 1e-5, "linear", dict(alpha=0.9, eps=0.0316, momentum=0.9)),
    "adam": (0.002, 0.001, 0.0, "sqrt", {}),
    "adamw": (0.002, 0.001, 0.05, "sqrt", {}),
}
# models with a recipe of their own (from-scratch lr at batch 64): the small digits network was tuned at these
MODEL_LR = {"mobilenet_v3_digits": {"sgd": 0.05, "adam": 0.003, "adamw": 0.01}}

MAX_BATCH = 64
MIN_BATCH = 8
# a run should see at least this many optimizer steps per epoch: with fewer, one epoch is one noisy update
MIN_STEPS_PER_EPOCH = 8


@dataclasses.dataclass
class Choice:
    batch_size: int
    lr: float
    weight_decay: float
    warmup_steps: int
    reasons: list  # what was chosen automatically, and why, for the log


def default_batch_size(n_train):
    """The largest power of two <= MAX_BATCH that still gives MIN_STEPS_PER_EPOCH steps an epoch (>= MIN_BATCH)."""
    batch = MAX_BATCH
    while batch > MIN_BATCH and n_train // batch < MIN_STEPS_PER_EPOCH:
        batch //= 2
    return batch


def scaled_lr(optimizer, batch_size, finetune, model=None):
    scratch, tuned, _, rule, _ = OPTIMIZERS[optimizer]
    base = tuned if finetune else MODEL_LR.get(model, {}).get(optimizer, scratch)
    ratio = batch_size / REFERENCE_BATCH
    return base * (ratio if rule == "linear" else math.sqrt(ratio))


def warmup_steps(total_steps, steps_per_epoch, finetune):
    """Linear warm-up length: the first epoch, at most a fifth of the run (a twentieth when fine-tuning)."""
    return min(steps_per_epoch, total_steps // (20 if finetune else 5))


def choose(config, n_train, finetune, world_size=1):
    """Fill ``batch_size``, ``lr``, ``weight_decay`` and ``warmup_steps`` left as None in ``config``.

    Returns a ``Choice``; ``reasons`` names every value that was chosen here (not given by the user).
    On ``world_size`` ranks ``batch_size`` is per rank; the rate and the steps follow the effective batch
    (``batch_size * world_size``).
    """
    if finetune and config.freeze_backbone and config.unfreeze_after is None:
        finetune = False  # only the new head trains: a from-scratch rate (its warm-up too)
    reasons = []
    batch = config.batch_size
    if batch is None:
        batch = default_batch_size(n_train // world_size)
        per_rank = f" per rank of {world_size}" if world_size > 1 else ""
        reasons.append(f"batch size {batch}{per_rank} ({n_train} training images: at least {MIN_STEPS_PER_EPOCH} "
                       f"steps an epoch, at most {MAX_BATCH} images a step{' per rank' if world_size > 1 else ''})")
    effective = batch * world_size
    lr = config.lr
    if lr is None:
        lr = scaled_lr(config.optimizer, effective, finetune, config.model)
        rule = OPTIMIZERS[config.optimizer][3]
        reasons.append(f"lr {lr:.3g} ({config.optimizer}{' fine-tuning' if finetune else ''}, scaled "
                       f"{'linearly' if rule == 'linear' else 'by the square root'} to batch {effective})")
    weight_decay = OPTIMIZERS[config.optimizer][2] if config.weight_decay is None else config.weight_decay
    steps_per_epoch = max(1, n_train // effective)
    warmup = config.warmup_steps
    if warmup is None:
        warmup = warmup_steps(config.epochs * steps_per_epoch, steps_per_epoch, finetune)
        reasons.append(f"{warmup} warm-up step{'s' if warmup != 1 else ''}, then cosine decay")
    return Choice(batch, float(lr), float(weight_decay), int(warmup), reasons)
