"""What travels with the weights: architecture, class names and preprocessing, in every file excite writes.

The same record (``meta``: model, num_classes, class_names, image_size, resize_size, interpolation, mean,
std, grayscale) lives in a training checkpoint's ``"meta"``, a weights ``.pth``'s ``"meta"`` (format
``excite-model-1``: ``{"format", "model": state_dict, "meta"}``, the wrapper torchvision's reference scripts
use), a ``.safetensors`` header's ``__metadata__`` and an ONNX graph's ``metadata_props``. The last two
hold only strings: plain strings stay as they are, everything else is JSON.
"""
import json
import os

from ..errors import CheckpointError

WEIGHTS_FORMAT = "excite-model-1"
KEYS = ("model", "num_classes", "class_names", "image_size", "resize_size", "interpolation", "mean", "std",
        "grayscale")
_TEXT_KEYS = ("model", "interpolation")
PREFIX = "excite."


def to_strings(meta):
    """``meta`` as a flat dict of str -> str (keys ``excite.<name>``), for safetensors and ONNX."""
    out = {}
    for key in KEYS:
        if key in meta and meta[key] is not None:
            value = meta[key]
            out[PREFIX + key] = value if key in _TEXT_KEYS else json.dumps(value)
    return out


def from_strings(strings, where="the file"):
    """The ``meta`` that ``to_strings`` wrote, or None when ``strings`` holds none."""
    if PREFIX + "model" not in strings:
        return None
    meta = {}
    for key in KEYS:
        text = strings.get(PREFIX + key)
        if text is None:
            continue
        if key in _TEXT_KEYS:
            meta[key] = text
            continue
        try:
            meta[key] = json.loads(text)
        except ValueError:
            raise CheckpointError(f"{where}: metadata {PREFIX + key} is not valid JSON: {text[:80]!r}") from None
    return meta


def from_run_json(path):
    """The ``meta`` of ``run.json`` beside the checkpoint ``path`` (how best.pth keeps it), or None."""
    run_json = os.path.join(os.path.dirname(os.path.abspath(path)), "run.json")
    if not os.path.isfile(run_json):
        return None
    try:
        with open(run_json) as f:
            return json.load(f).get("meta")
    except (OSError, ValueError, AttributeError):
        return None  # a damaged run.json: the weights are still usable with --model


def meta_of(obj, path):
    """(state_dict or None, meta or None) of a loaded checkpoint ``obj`` read from ``path``.

    Knows excite's training checkpoints and weights files, safetensors metadata and run.json.
    """
    from ..io import load_metadata
    from .run_dir import CHECKPOINT_FORMAT

    if isinstance(obj, dict) and obj.get("format") in (CHECKPOINT_FORMAT, WEIGHTS_FORMAT):
        return obj["model"], obj.get("meta")
    meta = from_strings(load_metadata(path), path)
    return None, meta if meta is not None else from_run_json(path)


def weights_file(state_dict, meta):
    """The object a weights ``.pth`` with metadata holds."""
    return {"format": WEIGHTS_FORMAT, "model": dict(state_dict), "meta": dict(meta)}


def meta_of_inference_model(loaded):
    """The ``meta`` of a loaded InferenceModel (predict.py), to write with an export or a conversion."""
    p = loaded.preprocessing
    return dict(model=loaded.name, num_classes=len(loaded.class_names), class_names=list(loaded.class_names),
                image_size=p.image_size, resize_size=p.resize_size, interpolation=p.interpolation, mean=list(p.mean),
                std=list(p.std), grayscale=bool(p.grayscale))
