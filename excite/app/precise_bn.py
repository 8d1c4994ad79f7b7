"""Precise BatchNorm: recompute the running statistics on training batches before an evaluation.

A BatchNorm layer evaluates with running averages that follow training only slowly: with momentum 0.01
(MobileNetV3's and torchvision's EfficientNet-B5+ setting) they average over the last ~100 steps, and a
run of a few dozen steps evaluates with statistics of weights that no longer exist — validation accuracy
sits at chance while training accuracy climbs. As pycls and Detectron do ("precise BN", Wu & Johnson,
2021), the statistics are then recomputed for the current weights: the plain mean of per-batch means and
variances over a few hundred training images, with everything but BatchNorm in eval mode.
"""
from ..errors import ExciteError

MODES = ("auto", "always", "never")
# how many training images the statistics are averaged over (pycls uses 8192 on ImageNet; a few hundred
# images already pin a channel's mean and variance to about 5 %)
PRECISE_BN_IMAGES = 512
# "settled": the initial statistics weigh less than this in the running average ...
SETTLED_WEIGHT = 0.05
# ... and the running average spans at most this fraction of an epoch (else it lags the weights)
MAX_LAG_EPOCHS = 0.25


def batch_norms(model, trainable_only=True):
    """The model's BatchNorm layers that track running statistics (only those being trained, by default)."""
    from ..nn.norm import _BatchNorm

    norms = []
    for module in model.modules():
        if isinstance(module, _BatchNorm) and module.track_running_stats:
            if trainable_only and not any(p.requires_grad for p in module.parameters()):
                continue
            norms.append(module)
    return norms


def needs_recalibration(model, steps_done, steps_per_epoch):
    """Why the running statistics cannot have settled after ``steps_done`` steps (a reason string), or None."""
    for norm in batch_norms(model):
        momentum = norm.momentum
        if momentum is None:  # a cumulative average over the whole run: always stale
            return "cumulative running averages (momentum None) mix in every earlier step"
        if (1 - momentum) ** steps_done > SETTLED_WEIGHT:
            return f"momentum {momentum:g} has not settled after {steps_done} steps"
        if 1 / momentum > MAX_LAG_EPOCHS * steps_per_epoch:
            return (f"momentum {momentum:g} averages over ~{round(1 / momentum)} steps, "
                    f"{1 / momentum / steps_per_epoch:.1f} epochs of {steps_per_epoch} steps")
    return None


def recompute(model, batches, max_images=PRECISE_BN_IMAGES):
    """Replace the running mean and variance of the trained BatchNorm layers by their average over ``batches``.

    ``batches`` yields (images, labels) or None (skipped). Returns (number of layers, number of images).
    The model comes back in eval mode; each layer keeps its momentum and ``num_batches_tracked``.
    """
    from ..autograd import no_grad

    norms = batch_norms(model)
    if not norms:
        return 0, 0
    saved = [(norm.momentum, None if norm.num_batches_tracked is None else norm.num_batches_tracked.data.copy())
             for norm in norms]
    model.eval()
    for norm in norms:
        norm.reset_running_stats()
        norm.momentum = None  # a cumulative average: the n-th batch weighs 1/n
        norm.train()
    seen = 0
    try:
        with no_grad():
            for batch in batches:
                if batch is None:
                    continue
                images, _ = batch
                model(images)
                seen += len(images)
                if seen >= max_images:
                    break
    finally:
        for norm, (momentum, tracked) in zip(norms, saved):
            norm.momentum = momentum
            if tracked is not None:
                norm.num_batches_tracked.data[...] = tracked
        model.eval()
    if seen == 0:
        raise ExciteError("precise BN: no training batch could be loaded to recompute the BatchNorm statistics")
    return len(norms), int(seen)

