"""Fine-tuning: start a training run from pretrained weights, with a new classifier and optionally a frozen backbone.

``--weights`` names a registry entry of the model (``DEFAULT``, ``IMAGENET1K_V1``, or an enum member) or a
checkpoint file (an excite checkpoint, a PyTorch ``.pth`` or a ``.safetensors`` file). The backbone's
weights load into a model built for the data set's classes; the last Linear layer is replaced unless the
checkpoint was trained on exactly these classes. The weights' own preprocessing (resize, crop,
interpolation, mean/std) becomes the run's.
"""
import dataclasses
import os

from ..errors import InvalidArgumentError


@dataclasses.dataclass
class Pretrained:
    model_name: str
    state_dict: dict
    class_names: list  # None when the source does not say
    preprocessing: dict  # image_size, resize_size, interpolation, mean, std (grayscale for the digits)
    description: str  # for the log: where the weights come from


def is_weights_file(weights):
    from .predict import looks_like_path

    return isinstance(weights, str) and (os.path.exists(weights) or looks_like_path(weights))


def load_pretrained(weights, model_name):
    """The state_dict, classes and preprocessing that ``weights`` names, for ``model_name`` (None: as recorded)."""
    if is_weights_file(weights):
        return _from_file(weights, model_name)
    if model_name is None:
        raise InvalidArgumentError(f"--weights {weights} names pretrained weights of a model; choose the model "
                                   "with --model")
    from ..vision.weights import resolve

    entry = resolve(model_name, weights)
    p = entry.preprocessing
    prep = dict(image_size=int(p["crop_size"]), resize_size=int(p["resize_size"]), interpolation=p["interpolation"],
                mean=list(p["mean"]), std=list(p["std"]), grayscale=False)
    return Pretrained(model_name, entry.get_state_dict(), list(entry.meta["categories"]), prep, repr(entry))


def _from_file(path, model_name):
    from .predict import load_inference_model

    if not os.path.isfile(path):
        raise InvalidArgumentError(f"--weights {path}: no such file")
    if path.lower().endswith(".onnx"):
        raise InvalidArgumentError(f"--weights {path}: an ONNX graph cannot be trained; fine-tune from the .pth or "
                                   ".safetensors it was exported from")
    loaded = load_inference_model(path, model=model_name)
    p = loaded.preprocessing
    prep = dict(image_size=int(p.image_size), resize_size=p.resize_size, interpolation=p.interpolation,
                mean=list(p.mean), std=list(p.std), grayscale=bool(p.grayscale))
    return Pretrained(loaded.name, loaded.model.state_dict(), list(loaded.class_names), prep, path)


def classifier_key(model):
    """The module name of the model's last Linear layer, whose rows are the classes."""
    from ..nn import Linear

    names = [name for name, m in model.named_modules() if isinstance(m, Linear)]
    if not names:
        raise InvalidArgumentError(f"{type(model).__name__} has no Linear layer to serve as the classifier")
    return names[-1]


def head_name(model):
    """What ``--freeze-backbone`` keeps trainable: the ``classifier`` block where the model has one, else the last Linear."""
    return "classifier" if "classifier" in dict(model.named_children()) else classifier_key(model)


def build_model(pretrained, class_names, log):
    """A model for ``class_names`` holding the pretrained backbone (and head, if the classes are the same)."""
    from ..vision.models import get_model
    from .predict import check_fits

    model = get_model(pretrained.model_name, num_classes=len(class_names))
    last = classifier_key(model)
    state = dict(pretrained.state_dict)
    same_classes = pretrained.class_names == list(class_names)
    head_keys = [k for k in model.state_dict() if k.startswith(last + ".")]
    if not same_classes:
        state = {k: v for k, v in state.items() if not k.startswith(last + ".")}
    own = model.state_dict()
    expected = {k: v for k, v in own.items() if same_classes or k not in head_keys}
    check_fits(expected, state, pretrained.model_name, pretrained.description)
    model.load_state_dict(state, strict=False)
    if same_classes:
        log(f"fine-tuning from {pretrained.description}: every layer loaded, the classifier included (the weights "
            f"were trained on these {len(class_names)} classes)")
    else:
        before = "" if pretrained.class_names is None else f"{len(pretrained.class_names)} classes -> "
        log(f"fine-tuning from {pretrained.description}: backbone loaded; new classifier {last} "
            f"({before}{len(class_names)} classes: {_brief(class_names)})")
    return model


def _brief(names, limit=5):
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names) - limit} more)" if len(names) > limit else "")


def set_backbone_trainable(model, trainable):
    """Freeze (or unfreeze) every parameter outside the head; returns the number of parameters changed."""
    head = head_name(model)
    changed = 0
    for name, param in model.named_parameters():
        if not (name == head or name.startswith(head + ".")):
            if param.requires_grad != trainable:
                changed += param.data.size
            param.requires_grad = trainable
            if not trainable:
                param.grad = None
    return changed


def backbone_to_eval(model):
    """After ``model.train()``: a frozen backbone is a fixed feature extractor (BatchNorm keeps its statistics)."""
    head_root = head_name(model).split(".")[0]
    for name, child in model.named_children():
        if name != head_root:
            child.eval()


def check_freeze_options(freeze_backbone, unfreeze_after, weights, epochs):
    if unfreeze_after is not None and not freeze_backbone:
        raise InvalidArgumentError("--unfreeze-after applies to a frozen backbone; add --freeze-backbone")
    if freeze_backbone and weights is None:
        raise InvalidArgumentError("--freeze-backbone keeps pretrained layers fixed; give them with --weights")
    if unfreeze_after is not None and not 0 < unfreeze_after < epochs:
        raise InvalidArgumentError(f"--unfreeze-after must be between 1 and the number of epochs - 1 ({epochs - 1}), "
                                   f"got {unfreeze_after}")


def frozen_at(config, epoch):
    """Whether the backbone is frozen during ``epoch`` (counted from 0)."""
    return bool(config.freeze_backbone) and (config.unfreeze_after is None or epoch < config.unfreeze_after)

