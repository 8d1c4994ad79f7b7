"""The model registry: look builders up by name (get_model, get_model_builder, list_models)."""
import difflib
import fnmatch

from ...errors import InvalidArgumentError
from . import efficientnet, maxvit, mobilenetv3, regnet

BUILTIN_MODELS = {
    builder.__name__: builder
    for builder in (
        mobilenetv3.mobilenet_v3_large, mobilenetv3.mobilenet_v3_small, mobilenetv3.mobilenet_v3_digits,
        efficientnet.efficientnet_b0, efficientnet.efficientnet_b1, efficientnet.efficientnet_b2,
        efficientnet.efficientnet_b3, efficientnet.efficientnet_b4, efficientnet.efficientnet_b5,
        efficientnet.efficientnet_b6, efficientnet.efficientnet_b7,
        efficientnet.efficientnet_v2_s, efficientnet.efficientnet_v2_m, efficientnet.efficientnet_v2_l,
        regnet.regnet_y_400mf, regnet.regnet_y_800mf, regnet.regnet_y_1_6gf, regnet.regnet_y_3_2gf,
        regnet.regnet_y_8gf, regnet.regnet_y_16gf, regnet.regnet_y_32gf, regnet.regnet_y_128gf,
        maxvit.maxvit_t,
    )
}


def list_models(module=None, include=None, exclude=None):
    """Sorted names of the available models, as torchvision's ``list_models``.

    ``module`` keeps the models defined in that package; ``include`` / ``exclude`` are fnmatch patterns
    (a string or several): the union of the includes, minus everything any exclude matches.
    """
    all_models = {name for name, builder in BUILTIN_MODELS.items()
                  if module is None or builder.__module__.rsplit(".", 1)[0] == module.__name__}
    if include:
        models = set()
        for pattern in [include] if isinstance(include, str) else include:
            models |= set(fnmatch.filter(all_models, pattern))
    else:
        models = all_models
    if exclude:
        for pattern in [exclude] if isinstance(exclude, str) else exclude:
            models -= set(fnmatch.filter(all_models, pattern))
    return sorted(models)


def get_model_builder(name):
    """The builder function registered under ``name`` (case-insensitive, as torchvision)."""
    if not isinstance(name, str):
        raise InvalidArgumentError(f"model name must be a str, got {type(name).__name__}")
    key = name.lower()
    try:
        return BUILTIN_MODELS[key]
    except KeyError:
        close = difflib.get_close_matches(key, BUILTIN_MODELS, n=3, cutoff=0.6)
        hint = f"; did you mean {' or '.join(repr(c) for c in close)}?" if close else "."
        raise InvalidArgumentError(
            f"Unknown model {name!r}{hint} Available models: {', '.join(list_models())}") from None


# the input resolution a model is designed for, where it is not ImageNet's 224
_INPUT_SIZES = {"mobilenet_v3_digits": mobilenetv3.MOBILENET_V3_DIGITS_INPUT_SIZE}


def default_input_size(name):
    """The square input size model ``name`` is designed for (224 unless the model says otherwise)."""
    return _INPUT_SIZES.get(get_model_builder(name).__name__, 224)


def get_model(name, **config):
    """Build the model registered under ``name``; keyword arguments go to its builder (weights=, num_classes=, ...)."""
    return get_model_builder(name)(**config)
