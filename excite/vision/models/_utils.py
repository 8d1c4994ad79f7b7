"""Helpers shared by the model builders: channel rounding and weight/keyword plumbing."""
from ... import nn
from ...errors import InvalidArgumentError

# the models initialise these to weight=1, bias=0 (torchvision lists GroupNorm too; excite may lack it)
_NORM_LAYERS = tuple(getattr(nn, name) for name in ("BatchNorm2d", "GroupNorm") if hasattr(nn, name))


def _make_divisible(v, divisor, min_value=None):
    """Round ``v`` to the nearest multiple of ``divisor`` (at least ``min_value``), never losing more than 10%.

    Taken from the TensorFlow MobileNet code, as torchvision does: checkpoints depend on every
    rounding step being identical (``int(v + divisor / 2)`` truncates, it does not round half-even).
    """
    if min_value is None:
        min_value = divisor
    new_v = max(min_value, int(v + divisor / 2) // divisor * divisor)
    # rounding down may not remove more than 10% of the channels
    if new_v < 0.9 * v:
        new_v += divisor
    return new_v


def _ovewrite_named_param(kwargs, param, new_value):
    """Set ``kwargs[param]`` to what the weights require; refuse a user value that contradicts it.

    The misspelling is torchvision's; the name is kept so code ported from there keeps working.
    """
    if param in kwargs:
        if kwargs[param] != new_value:
            raise InvalidArgumentError(
                f"The parameter '{param}' expected value {new_value} but got {kwargs[param]} instead.")
    else:
        kwargs[param] = new_value


def _resolve_weights(model_name, weights, kwargs):
    """Look up ``weights`` for ``model_name`` and pin ``num_classes`` to the entry's; None when no weights."""
    if weights is None:
        return None
    # imported here so that building a model never needs the weights registry (or its io imports)
    from ..weights import resolve

    entry = resolve(model_name, weights)
    if entry is not None:
        _ovewrite_named_param(kwargs, "num_classes", entry.num_classes)
    return entry


def _load_weights(model, entry, progress):
    if entry is not None:
        from ..weights import load_pretrained

        load_pretrained(model, entry, progress=progress)
    return model
