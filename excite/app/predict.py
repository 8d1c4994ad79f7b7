"""Inference models from a checkpoint or a registered name, and top-k image classification (`excite predict`)."""
import contextlib
import dataclasses
import os
import tempfile
from typing import List, Optional, Sequence, Tuple

import numpy as np

from ..errors import CheckpointError, ExciteError, InvalidArgumentError, UnsafeCheckpointError, shape_str
from ..vision.weights import IMAGENET_MEAN, IMAGENET_STD

CHECKPOINT_SUFFIXES = (".pth", ".pt", ".pth.tar", ".ckpt", ".bin", ".safetensors", ".onnx")
# wrappers other tools put around a state_dict (torchvision's reference scripts use "model")
STATE_DICT_KEYS = ("model", "state_dict", "model_state_dict", "model_state")


@dataclasses.dataclass
class Preprocessing:
    """How an image becomes the model's input: resize, center crop, to [0, 1], normalize."""

    image_size: int
    resize_size: object  # an int (shorter side) or [h, w]
    mean: list
    std: list
    interpolation: str = "bilinear"
    grayscale: bool = False

    def transform(self):
        from ..vision import transforms as T

        steps = [T.Grayscale(num_output_channels=1)] if self.grayscale else []
        steps += [T.Resize(self.resize_size, interpolation=self.interpolation), T.CenterCrop(self.image_size)]
        if self.grayscale:
            steps.append(T.Grayscale(num_output_channels=3))
        steps += [T.ToTensor(), T.Normalize(self.mean, self.std)]
        return T.Compose(steps)

    @classmethod
    def imagenet(cls, image_size, resize_size=None):
        resize = int(round(image_size / 0.875)) if resize_size is None else resize_size
        return cls(image_size=image_size, resize_size=resize, mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD))


@dataclasses.dataclass
class InferenceModel:
    model: object
    name: str
    class_names: list
    preprocessing: Preprocessing
    source: str


# ----- state dicts -----------------------------------------------------------------------------
def _is_state_dict(obj):
    from ..tensor import Tensor

    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, Tensor) for v in obj.values())


def extract_state_dict(obj, where):
    """The state_dict inside a loaded checkpoint: bare, or under one of the usual wrapper keys."""
    if isinstance(obj, dict) and not _is_state_dict(obj):
        for key in STATE_DICT_KEYS:
            if _is_state_dict(obj.get(key)):
                obj = obj[key]
                break
    if not _is_state_dict(obj):
        raise CheckpointError(f"{where} holds no model weights (expected a state_dict of tensors, or one under "
                              f"the key {' / '.join(repr(k) for k in STATE_DICT_KEYS)})")
    if all(k.startswith("module.") for k in obj):  # saved from DataParallel / DistributedDataParallel
        obj = {k[len("module."):]: v for k, v in obj.items()}
    return obj


def _brief(keys, limit=3):
    keys = list(keys)
    shown = ", ".join(keys[:limit])
    return shown + (f", ... ({len(keys) - limit} more)" if len(keys) > limit else "")


def check_fits(model, state_dict, name, where):
    """Raise CheckpointError saying briefly which keys differ when ``state_dict`` is not for ``model``.

    ``model`` may also be the state_dict expected (a dict).
    """
    own = model if isinstance(model, dict) else model.state_dict()
    optional = {k for k in own if k.endswith("num_batches_tracked")}  # absent from old checkpoints
    missing = [k for k in own if k not in state_dict and k not in optional]
    unexpected = [k for k in state_dict if k not in own]
    resized = [f"{k} {shape_str(state_dict[k].shape)} vs {shape_str(own[k].shape)}"
               for k in own if k in state_dict and tuple(state_dict[k].shape) != tuple(own[k].shape)]
    if not (missing or unexpected or resized):
        return
    parts = []
    if missing:
        parts.append(f"{len(missing)} missing keys ({_brief(missing)})")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected keys ({_brief(unexpected)})")
    if resized:
        parts.append(f"{len(resized)} shape mismatches, checkpoint vs model ({_brief(resized, 2)})")
    raise CheckpointError(f"{where} does not fit {name}: " + "; ".join(parts)
                          + " — is it a checkpoint of another architecture? (choose it with --model)")


def _classifier_key(model):
    """The weight key of the model's last Linear layer, whose rows are the classes."""
    from ..nn import Linear

    linears = [name for name, m in model.named_modules() if isinstance(m, Linear)]
    return f"{linears[-1]}.weight" if linears else None


def model_for_state_dict(name, state_dict, where, num_classes=None):
    """Build ``name`` sized to the checkpoint's number of classes and load ``state_dict`` into it."""
    from ..vision.models import get_model

    model = get_model(name) if num_classes is None else get_model(name, num_classes=num_classes)
    key = _classifier_key(model)
    if num_classes is None and key in state_dict:
        found = int(state_dict[key].shape[0])
        if found != model.state_dict()[key].shape[0]:
            model = get_model(name, num_classes=found)
    check_fits(model, state_dict, name, where)
    model.load_state_dict(state_dict, strict=False)
    return model.eval()


def _class_names(count, names=None):
    if names is not None and len(names) == count:
        return list(names)
    if count == 1000:
        from ..vision._imagenet_categories import IMAGENET_CATEGORIES

        return list(IMAGENET_CATEGORIES)
    return [str(i) for i in range(count)]


def _num_outputs(model, state_dict):
    key = _classifier_key(model)
    return int(state_dict[key].shape[0]) if key in state_dict else None


# ----- sources ---------------------------------------------------------------------------------
def looks_like_path(text):
    return os.sep in text or "/" in text or text.lower().endswith(CHECKPOINT_SUFFIXES)


def load_inference_model(source: str, model: Optional[str] = None, weights: Optional[str] = None,
                         image_size: Optional[int] = None, resize_size: Optional[int] = None) -> "InferenceModel":
    """Resolve ``source`` for inference.

    ``source`` is an excite training checkpoint (last.pth, or best.pth with its run.json beside
    it), an excite weights file (.pth or .safetensors with metadata), a PyTorch / safetensors
    checkpoint of a registered model (name it with ``model``), an ONNX graph (run by onnxruntime),
    or a registered model name (with ``weights``, e.g. ``"DEFAULT"``).
    """
    if os.path.isdir(source):
        raise InvalidArgumentError(f"{source} is a directory, not a checkpoint file")
    if os.path.isfile(source):
        if weights is not None:
            raise InvalidArgumentError("--weights names pretrained weights of a model name; it does not apply "
                                       "to a checkpoint file")
        return _from_checkpoint(source, model, image_size, resize_size)
    if looks_like_path(source):
        raise InvalidArgumentError(f"no such file: {source}")
    return _from_name(source, model, weights, image_size, resize_size)


def _from_checkpoint(path, model_name, image_size, resize_size):
    from ..io import load
    from ..vision.models import default_input_size, get_model_builder
    from .metadata import meta_of

    if path.lower().endswith(".onnx"):
        return _from_onnx(path, model_name, image_size, resize_size)
    try:
        obj = load(path)
    except UnsafeCheckpointError as e:
        raise UnsafeCheckpointError(f"{e}; if {path} is a whole pickled model, save its weights instead: "
                                    "torch.save(model.state_dict(), path)") from None
    state_dict, meta = meta_of(obj, path)
    if state_dict is None:
        state_dict = extract_state_dict(obj, path)
    if model_name is not None and meta is not None and model_name != meta["model"]:
        meta = None  # the user overrides what the run recorded
    name = model_name or (meta or {}).get("model")
    if name is None:
        raise InvalidArgumentError(f"{path} holds only weights and no record of its architecture; "
                                   "name it with --model (excite info lists the models)")
    get_model_builder(name)  # an unknown name raises, with the close matches
    num_classes = meta["num_classes"] if meta else None
    model = model_for_state_dict(name, state_dict, path, num_classes=num_classes)
    prep, names = _preprocessing(meta, image_size, resize_size, default_input_size(name))
    return InferenceModel(model, name, _class_names(_num_outputs(model, state_dict) or len(names or []), names),
                          prep, path)


def _preprocessing(meta, image_size, resize_size, default_size):
    """(Preprocessing, class names or None) from a recorded ``meta`` and the user's overrides."""
    if meta is None:
        return Preprocessing.imagenet(image_size or default_size, resize_size), None
    prep = Preprocessing(image_size=meta["image_size"], resize_size=meta["resize_size"], mean=meta["mean"],
                         std=meta["std"], interpolation=meta.get("interpolation", "bilinear"),
                         grayscale=bool(meta.get("grayscale", False)))
    if image_size is not None:
        # keep the trained relation: a square resize stays square, a shorter-side resize keeps its margin
        square = isinstance(prep.resize_size, (list, tuple))
        prep = dataclasses.replace(prep, image_size=image_size,
                                   resize_size=[image_size, image_size] if square else round(image_size / 0.875))
    if resize_size is not None:
        prep = dataclasses.replace(prep, resize_size=resize_size)
    return prep, meta.get("class_names")


def _from_onnx(path, model_name, image_size, resize_size):
    """An exported ONNX graph, run by onnxruntime; classes and preprocessing from its metadata_props."""
    from ..onnx.runtime import OnnxModel
    from .metadata import from_strings

    session = OnnxModel(path)
    meta = from_strings(dict(session.session.get_modelmeta().custom_metadata_map), path)
    height = session.input_shape[2] if len(session.input_shape) == 4 else None
    prep, names = _preprocessing(meta, image_size, resize_size, height or 224)
    outputs = session.session.get_outputs()[0].shape
    count = outputs[-1] if outputs and isinstance(outputs[-1], int) else len(names or [])
    name = model_name or (meta or {}).get("model") or os.path.basename(path)
    return InferenceModel(session, name, _class_names(count, names), prep, path)


def _from_name(name, model_name, weights, image_size, resize_size):
    from ..vision import weights as registry
    from ..vision.models import get_model, get_model_builder

    get_model_builder(name)  # an unknown name raises, with the close matches
    if model_name is not None and model_name != name:
        raise InvalidArgumentError(f"--model {model_name} contradicts the model name {name}")
    if weights is None:
        raise InvalidArgumentError(f"{name} is a model name without weights; a freshly initialised model predicts "
                                   "noise: pass --weights DEFAULT (pretrained) or a checkpoint file")
    entry = registry.resolve(name, weights)
    model = registry.load_pretrained(get_model(name), entry).eval()
    p = entry.preprocessing
    prep = Preprocessing(image_size=image_size or p["crop_size"], resize_size=resize_size or p["resize_size"],
                         mean=list(p.get("mean", IMAGENET_MEAN)),
                         std=list(p.get("std", IMAGENET_STD)),
                         interpolation=p.get("interpolation", "bilinear"))
    return InferenceModel(model, name, list(entry.meta["categories"]), prep, f"{name} ({entry!r})")


# ----- images ----------------------------------------------------------------------------------
def open_image(path):
    """Open ``path`` as an RGB PIL image, or raise InvalidArgumentError saying why it cannot be."""
    from PIL import Image, UnidentifiedImageError

    if os.path.isdir(path):
        raise InvalidArgumentError(f"{path} is a directory, not an image")
    if not os.path.isfile(path):
        raise InvalidArgumentError(f"no such file: {path}")
    try:
        with Image.open(path) as img:
            return img.convert("RGB")
    except UnidentifiedImageError:
        raise InvalidArgumentError(f"{path} is not an image (Pillow cannot identify its format)") from None
    except (OSError, ValueError, SyntaxError) as e:  # truncated or corrupt image data
        raise InvalidArgumentError(f"cannot read image {path}: {e}") from None


def preprocess(loaded, paths):
    """A [N, 3, H, W] float32 batch of the images at ``paths``."""
    transform = loaded.preprocessing.transform()
    return np.stack([np.asarray(transform(open_image(p)).data, dtype=np.float32) for p in paths])


@contextlib.contextmanager
def runner(loaded, engine="excite"):
    """A function from a [N, 3, H, W] float32 batch to logits: excite's compiled graph, or (exported once)
    onnxruntime."""
    from ..tensor import Tensor

    from ..onnx.runtime import OnnxModel

    if isinstance(loaded.model, OnnxModel):  # an ONNX file runs where it is, whatever the engine
        yield lambda batch: np.asarray(loaded.model(batch))
    elif engine == "excite":
        # the compiled graph (`excite.compile`): planned once per batch shape, the last batch included
        from ..graph.executor import compile as compile_model

        compiled = []

        def run(batch):
            if not compiled:
                compiled.append(compile_model(loaded.model.eval(), batch))
            return compiled[0](batch).data

        yield run
    elif engine == "onnxruntime":
        from ..onnx import export, load_onnx

        size = loaded.preprocessing.image_size
        with tempfile.TemporaryDirectory(prefix="excite-predict-") as tmp:
            path = os.path.join(tmp, "model.onnx")
            export(loaded.model, Tensor(np.zeros((1, 3, size, size), dtype=np.float32)), path)
            session = load_onnx(path)
            yield lambda batch: np.asarray(session(batch))
    else:
        raise InvalidArgumentError(f"engine must be 'excite' or 'onnxruntime', got {engine!r}")


def softmax(x):
    x = np.asarray(x, dtype=np.float64)
    e = np.exp(x - x.max(axis=1, keepdims=True))
    return e / e.sum(axis=1, keepdims=True)


def classify(loaded: "InferenceModel", paths: Sequence[str], topk: int = 5, engine: str = "excite",
             batch_size: int = 32) -> List[List[Tuple[int, str, float]]]:
    """For each image, its ``topk`` (class index, class name, probability), most probable first."""
    if int(topk) != topk or topk < 1:
        raise InvalidArgumentError(f"topk must be a positive integer, got {topk!r}")
    chunks = [paths[i:i + batch_size] for i in range(0, len(paths), batch_size)]
    with runner(loaded, engine) as run:
        probs = np.concatenate([softmax(run(preprocess(loaded, chunk))) for chunk in chunks])
    if probs.shape[1] != len(loaded.class_names):
        raise ExciteError(f"the model has {probs.shape[1]} outputs but {len(loaded.class_names)} class names")
    k = min(int(topk), probs.shape[1])
    results = []
    for path, row in zip(paths, probs):
        order = np.argsort(-row, kind="stable")[:k]
        results.append([(int(i), loaded.class_names[i], float(row[i])) for i in order])
    return results
