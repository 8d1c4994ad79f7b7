"""The configuration of a training run (TrainConfig): every setting, its default and its checks."""
import dataclasses
import math
import os

from ..errors import InvalidArgumentError
from . import finetune, precise_bn
from .defaults import OPTIMIZERS

DEFAULT_MODEL = "mobilenet_v3_digits"


@dataclasses.dataclass
class TrainConfig:
    """Everything that determines a run. ``None`` fields take the default for the model and data."""

    model: str = None  # None: mobilenet_v3_digits, or the architecture recorded in a --weights file
    data: str = None  # an ImageFolder root; None trains on the bundled digits
    epochs: int = 10
    batch_size: int = None  # None: from the training set's size (defaults.py)
    lr: float = None  # None: from the optimizer, the batch size and whether the run fine-tunes
    optimizer: str = "adamw"
    weight_decay: float = None
    image_size: int = None
    seed: int = 0
    workers: int = None
    limit: int = None  # at most this many images per split (quick experiments and tests)
    val_fraction: float = 0.1
    label_smoothing: float = 0.1
    weights: str = None  # fine-tune from: a registry name (DEFAULT, IMAGENET1K_V1) or a checkpoint file
    freeze_backbone: bool = False  # train only the classifier (needs weights)
    unfreeze_after: int = None  # with freeze_backbone: train everything from this epoch on
    precise_bn: str = "auto"  # recompute BatchNorm statistics before each evaluation: auto, always, never
    warmup_steps: int = None  # None: from the run's length (defaults.py)
    strict_data: bool = False  # an unreadable image stops the run instead of being skipped
    world_size: int = 1  # MPI ranks (--distributed): batch_size is per rank, each step averages their gradients

    def resolved(self):
        """A copy with the defaults that need no data filled in and every value checked.

        The rest (batch size, lr, warm-up; image size and model from --weights) the Trainer fills in once it
        knows the data and the pretrained weights.
        """
        from ..vision.models import get_model_builder

        c = dataclasses.replace(self)
        if c.model is None and not finetune.is_weights_file(c.weights):
            c.model = DEFAULT_MODEL
        if c.model is not None:
            get_model_builder(c.model)  # an unknown name raises, with the close matches
        if c.optimizer not in OPTIMIZERS:
            raise InvalidArgumentError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {c.optimizer!r}")
        if c.precise_bn not in precise_bn.MODES:
            raise InvalidArgumentError(f"precise_bn must be one of {', '.join(precise_bn.MODES)}, got {c.precise_bn!r}")
        c.workers = (0 if c.data is None else 2) if c.workers is None else int(c.workers)
        for name, low in (("epochs", 1), ("batch_size", 1), ("world_size", 1), ("image_size", 8), ("workers", 0),
                          ("limit", 2), ("warmup_steps", 0), ("unfreeze_after", 1)):
            value = getattr(c, name)
            if value is not None and (isinstance(value, bool) or int(value) != value or value < low):
                raise InvalidArgumentError(f"{name} must be an integer >= {low}, got {value!r}")
        if c.lr is not None and not (c.lr > 0 and math.isfinite(c.lr)):
            raise InvalidArgumentError(f"lr must be a positive number, got {c.lr!r}")
        if c.weight_decay is not None and not 0 <= c.weight_decay < math.inf:
            raise InvalidArgumentError(f"weight_decay must be >= 0, got {c.weight_decay!r}")
        finetune.check_freeze_options(c.freeze_backbone, c.unfreeze_after, c.weights, c.epochs)
        if not 0 <= c.label_smoothing < 1:
            raise InvalidArgumentError(f"label_smoothing must be in [0, 1), got {c.label_smoothing!r}")
        if not 0 < c.val_fraction < 1:
            raise InvalidArgumentError(f"val_fraction must be between 0 and 1, got {c.val_fraction!r}")
        if c.data is not None:
            c.data = os.path.abspath(c.data)
        return c
