"""The training loop behind `excite train`: data, model, optimizer, schedule, checkpoints, resume and Ctrl-C.

A run is a pure function of its config: the data order of epoch ``e`` comes from the seed and ``e``,
augmentations from (seed, epoch, batch), dropout from (seed, epoch, step). So a run stopped anywhere
and resumed from ``last.pth`` ends with the same weights as one that never stopped.
"""
import dataclasses
import json
import math
import os
import signal
import sys
import threading
import time
from contextlib import contextmanager

import numpy as np

from ..errors import CheckpointError, InvalidArgumentError
from .train_data import EpochBatches, build_splits, collate_or_skip

DEFAULT_OUT = os.path.join("runs", "excite")
CHECKPOINT_FORMAT = "excite-train-1"

# name -> (default lr, default weight decay, extra constructor arguments). The RMSprop numbers are
# torchvision's MobileNetV3 recipe; the AdamW ones were tuned on the digits run.
OPTIMIZERS = {
    "sgd": (0.05, 5e-5, dict(momentum=0.9, nesterov=True)),
    "rmsprop": (0.004, 1e-5, dict(alpha=0.9, eps=0.0316, momentum=0.9)),
    "adam": (0.003, 0.0, {}),
    "adamw": (0.01, 0.05, {}),
}


@dataclasses.dataclass
class TrainConfig:
    """Everything that determines a run. ``None`` fields take the default for the model and data."""

    model: str = "mobilenet_v3_digits"
    data: str = None  # an ImageFolder root; None trains on the bundled digits
    epochs: int = 10
    batch_size: int = 64
    lr: float = None
    optimizer: str = "adamw"
    weight_decay: float = None
    image_size: int = None
    seed: int = 0
    workers: int = None
    limit: int = None  # at most this many images per split (quick experiments and tests)
    val_fraction: float = 0.1
    label_smoothing: float = 0.1

    def resolved(self):
        """A copy with defaults filled in and every value checked."""
        from ..vision.models import default_input_size, get_model_builder

        get_model_builder(self.model)  # an unknown name raises, with the close matches
        c = dataclasses.replace(self)
        if c.optimizer not in OPTIMIZERS:
            raise InvalidArgumentError(f"optimizer must be one of {', '.join(OPTIMIZERS)}, got {c.optimizer!r}")
        default_lr, default_wd, _ = OPTIMIZERS[c.optimizer]
        c.lr = default_lr if c.lr is None else float(c.lr)
        c.weight_decay = default_wd if c.weight_decay is None else float(c.weight_decay)
        c.image_size = default_input_size(c.model) if c.image_size is None else int(c.image_size)
        c.workers = (0 if c.data is None else 2) if c.workers is None else int(c.workers)
        for name, low in (("epochs", 1), ("batch_size", 1), ("image_size", 8), ("workers", 0), ("limit", 2)):
            value = getattr(c, name)
            if value is not None and (int(value) != value or value < low):
                raise InvalidArgumentError(f"{name} must be an integer >= {low}, got {value!r}")
        if not (c.lr > 0 and math.isfinite(c.lr)):
            raise InvalidArgumentError(f"lr must be a positive number, got {c.lr!r}")
        if c.weight_decay < 0:
            raise InvalidArgumentError(f"weight_decay must be >= 0, got {c.weight_decay!r}")
        if not 0 <= c.label_smoothing < 1:
            raise InvalidArgumentError(f"label_smoothing must be in [0, 1), got {c.label_smoothing!r}")
        if not 0 < c.val_fraction < 1:
            raise InvalidArgumentError(f"val_fraction must be between 0 and 1, got {c.val_fraction!r}")
        if c.data is not None:
            c.data = os.path.abspath(c.data)
        return c


class TrainingInterrupted(Exception):
    """Training stopped on request (Ctrl-C) after saving ``last.pth``; ``--resume`` continues it."""

    def __init__(self, checkpoint, epoch, step, steps):
        self.checkpoint, self.epoch, self.step, self.steps = checkpoint, epoch, step, steps
        where = f"epoch {epoch + 1}, batch {step}/{steps}" if step < steps else f"end of epoch {epoch + 1}"
        super().__init__(f"interrupted at {where}; saved {checkpoint}")


@dataclasses.dataclass
class TrainResult:
    out: str
    best_checkpoint: str
    last_checkpoint: str
    best_epoch: int
    best_val_accuracy: float
    test_accuracy: float
    test_loss: float
    test_split: str  # "test", or "val" when the data has no separate test split
    test_size: int
    history: list
    seconds: float


# ----- model, optimizer, schedule ----------------------------------------------------------------
def build_optimizer(config, params):
    from .. import optim

    _, _, extra = OPTIMIZERS[config.optimizer]
    cls = {"sgd": optim.SGD, "rmsprop": optim.RMSprop, "adam": optim.Adam, "adamw": optim.AdamW}[config.optimizer]
    return cls(params, lr=config.lr, weight_decay=config.weight_decay, **extra)


def build_scheduler(optimizer, total_steps, steps_per_epoch):
    """Linear warm-up over the first epoch (at most a fifth of the run), then cosine decay to zero.

    Stepped once per batch, so a resumed run picks up the schedule exactly where it stopped.
    """
    from ..optim import lr_scheduler

    warmup = min(steps_per_epoch, total_steps // 5)
    cosine = lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(1, total_steps - warmup))
    if warmup == 0:
        return cosine
    ramp = lr_scheduler.LinearLR(optimizer, start_factor=0.04, total_iters=warmup)
    return lr_scheduler.SequentialLR(optimizer, [ramp, cosine], milestones=[warmup])


# ----- Ctrl-C ----------------------------------------------------------------------------------
class _StopRequest:
    """Turns the first SIGINT into a request to stop at the next safe point (between two batches).

    A second Ctrl-C raises KeyboardInterrupt at once; the checkpoint on disk is then the previous
    one, intact, because every save is atomic.
    """

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame):
        # no output and no imports here: the handler may run in the middle of either
        if self.requested:
            raise KeyboardInterrupt
        self.requested = True

    @contextmanager
    def installed(self):
        main = threading.current_thread() is threading.main_thread()
        if main:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        try:
            yield self
        finally:
            if main:
                signal.signal(signal.SIGINT, self._previous)


# ----- checkpoints -------------------------------------------------------------------------------
def _rng_state_text():
    from ..random import get_rng_state

    # numpy's PCG64 state holds 128-bit ints; as text it stays plain data any unpickler reads
    return json.dumps(get_rng_state())


def _restore_rng(text):
    from ..random import set_rng_state

    set_rng_state(json.loads(text))


def load_run_checkpoint(path):
    """Load an excite training checkpoint (last.pth) and check it is one."""
    from ..io import load

    ckpt = load(path)
    if not (isinstance(ckpt, dict) and ckpt.get("format") == CHECKPOINT_FORMAT):
        raise CheckpointError(f"{path} is not an excite training checkpoint (last.pth written by excite train)")
    return ckpt


def latest_run(out):
    """The most recently written run directory among ``out``, ``out2``, ``out3``, ... (None if none)."""
    candidates = [d for d in _numbered_dirs(out) if os.path.isfile(os.path.join(d, "last.pth"))]
    return max(candidates, key=lambda d: os.path.getmtime(os.path.join(d, "last.pth")), default=None)


def _numbered_dirs(out):
    parent, base = os.path.split(os.path.abspath(out))
    if not os.path.isdir(parent):
        return []
    names = [n for n in os.listdir(parent) if n == base or (n.startswith(base) and n[len(base):].isdigit())]
    return [os.path.join(parent, n) for n in names]


def fresh_run_dir(out):
    """``out`` if it holds no run yet, else the first of ``out2``, ``out3``, ... that does not exist."""
    def holds_run(d):
        return os.path.exists(os.path.join(d, "last.pth")) or os.path.exists(os.path.join(d, "best.pth"))

    if not holds_run(out):
        return out
    n = 2
    while os.path.exists(f"{out}{n}"):
        n += 1
    return f"{out}{n}"


# ----- the loop ----------------------------------------------------------------------------------
class Trainer:
    """Runs one training run; ``Trainer(config, out).run()`` or ``Trainer.resume(last_pth).run()``."""

    def __init__(self, config, out, log=None, progress=True, _checkpoint=None):
        from ..vision.models import get_model

        self.config = config.resolved()
        self.out = os.path.abspath(out)
        self.log = log or (lambda msg: print(msg, flush=True))
        self.progress = progress
        c = self.config
        self.splits = build_splits(c)
        if _checkpoint is not None and _checkpoint["meta"]["class_names"] != self.splits.classes:
            raise CheckpointError(
                f"the data now has classes {self.splits.classes[:5]}..., the checkpoint was trained on "
                f"{_checkpoint['meta']['class_names'][:5]}...; resume needs the same data")
        from ..random import manual_seed

        manual_seed(c.seed)
        self.model = get_model(c.model, num_classes=len(self.splits.classes))
        self.optimizer = build_optimizer(c, self.model.parameters())
        self.batches = EpochBatches(len(self.splits.train), c.batch_size, c.seed)
        self.steps_per_epoch = len(self.batches)
        self.scheduler = build_scheduler(self.optimizer, c.epochs * self.steps_per_epoch, self.steps_per_epoch)
        self.epoch, self.step = 0, 0
        self.totals = dict(loss=0.0, correct=0, seen=0)
        self.best_accuracy, self.best_loss, self.best_epoch, self.history = -1.0, math.inf, -1, []
        self.last_path = os.path.join(self.out, "last.pth")
        self.best_path = os.path.join(self.out, "best.pth")
        if _checkpoint is not None:
            self._load_state(_checkpoint)

    @classmethod
    def resume(cls, path, out=None, log=None, progress=True, workers=None, checkpoint=None):
        """Continue the run saved in ``path`` (its already loaded contents may come as ``checkpoint``)."""
        ckpt = load_run_checkpoint(path) if checkpoint is None else checkpoint
        config = TrainConfig(**{k: v for k, v in ckpt["config"].items() if k in TrainConfig.__dataclass_fields__})
        if workers is not None:
            config.workers = workers  # the only setting that does not change the result
        return cls(config, out or os.path.dirname(os.path.abspath(path)), log=log, progress=progress,
                   _checkpoint=ckpt)

    # -- state ----------------------------------------------------------------------------------
    def meta(self):
        return dict(model=self.config.model, num_classes=len(self.splits.classes),
                    class_names=list(self.splits.classes), **self.splits.preprocessing)

    def state(self):
        return {
            "format": CHECKPOINT_FORMAT,
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lr_scheduler": self.scheduler.state_dict(),
            "epoch": self.epoch,
            "step": self.step,
            "epoch_totals": dict(self.totals),
            "best_accuracy": self.best_accuracy,
            "best_loss": self.best_loss,
            "best_epoch": self.best_epoch,
            "history": list(self.history),
            "rng": _rng_state_text(),
            "meta": self.meta(),
            "config": dataclasses.asdict(self.config),
        }

    def _load_state(self, ckpt):
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.scheduler.load_state_dict(ckpt["lr_scheduler"])
        self.epoch, self.step = int(ckpt["epoch"]), int(ckpt["step"])
        self.totals = dict(ckpt["epoch_totals"])
        self.best_accuracy, self.best_epoch = float(ckpt["best_accuracy"]), int(ckpt["best_epoch"])
        self.best_loss = float(ckpt["best_loss"])
        self.history = list(ckpt["history"])
        _restore_rng(ckpt["rng"])

    def save_last(self):
        from ..io import save

        save(self.state(), self.last_path)

    def _write_run_json(self, extra):
        # lets `excite predict best.pth` find the architecture and preprocessing of a bare state_dict
        info = dict(meta=self.meta(), config=dataclasses.asdict(self.config), **extra)
        tmp = os.path.join(self.out, f".run.json.{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            json.dump(info, f, indent=2)
        os.replace(tmp, os.path.join(self.out, "run.json"))

    # -- running --------------------------------------------------------------------------------
    def _loader(self, dataset, batch_sampler=None, batch_size=None):
        from ..data import DataLoader

        if batch_sampler is not None:
            return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=self.config.workers,
                              collate_fn=collate_or_skip, seed=self.config.seed)
        return DataLoader(dataset, batch_size=batch_size, num_workers=self.config.workers, seed=self.config.seed)

    def run(self, _stop_at=None):
        """Train to the configured number of epochs; returns a TrainResult.

        ``_stop_at=(epoch, step)`` acts as a Ctrl-C arriving just before batch ``step`` of ``epoch`` is
        trained (both counted from 0; tests use it).
        """
        os.makedirs(self.out, exist_ok=True)
        c = self.config
        started = time.perf_counter()
        stop = _StopRequest()
        epochs = f"{c.epochs} epoch" + ("s" if c.epochs > 1 else "")
        with stop.installed():  # before the first line of output, so a Ctrl-C after it always saves
            self.log(f"training {c.model} on {'digits' if c.data is None else c.data} "
                     f"({len(self.splits.train)} train / {len(self.splits.val)} val images, "
                     f"{len(self.splits.classes)} classes, {c.image_size}x{c.image_size}) for {epochs}; "
                     f"checkpoints in {self.out}")
            if self.epoch or self.step:
                self.log(f"resuming at epoch {self.epoch + 1}, batch {self.step}/{self.steps_per_epoch}")
            train_loader = self._loader(self.splits.train, batch_sampler=self.batches)
            while self.epoch < c.epochs:
                epoch_started = time.perf_counter()
                self._train_epoch(train_loader, stop, _stop_at)
                val_loss, val_acc = self.evaluate(self.splits.val, stop=stop)
                if stop.requested:
                    self._stop()
                self._finish_epoch(val_loss, val_acc, time.perf_counter() - epoch_started)
            return self._final_result(time.perf_counter() - started, stop)

    def _stop(self):
        print(f"\nstopping: saving {self.last_path} (Ctrl-C again aborts without saving)", file=sys.stderr,
              flush=True)
        self.save_last()
        raise TrainingInterrupted(self.last_path, self.epoch, self.step, self.steps_per_epoch)

    def _train_epoch(self, loader, stop, stop_at):
        import excite.nn.functional as F
        from tqdm import tqdm

        from ..random import use_generator

        c = self.config
        self.model.train()
        self.batches.set_epoch(self.epoch)
        self.batches.skip = self.step
        loader.set_epoch(self.epoch)
        remaining = self.steps_per_epoch - self.step
        bar = tqdm(total=remaining * min(c.batch_size, len(self.splits.train)), unit="img", leave=False,
                   desc=f"epoch {self.epoch + 1}/{c.epochs}", disable=not self.progress or None, file=sys.stderr,
                   dynamic_ncols=True, mininterval=0.5)
        with bar:
            for batch in loader:
                if batch is None:  # already trained before the resume
                    continue
                if stop_at is not None and (self.epoch, self.step) == tuple(stop_at):
                    stop.requested = True
                if stop.requested:
                    self._stop()
                images, labels = batch
                with use_generator(np.random.default_rng([c.seed, 4, self.epoch, self.step])):
                    logits = self.model(images)
                    loss = F.cross_entropy(logits, labels, label_smoothing=c.label_smoothing)
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                self.optimizer.step()
                self.scheduler.step()
                self.step += 1
                n = len(labels)
                self.totals["loss"] += float(loss.item()) * n
                self.totals["correct"] += int((logits.data.argmax(1) == labels.data).sum())
                self.totals["seen"] += n
                bar.update(n)
                bar.set_postfix(loss=f"{self.totals['loss'] / self.totals['seen']:.4f}", refresh=False)

    def evaluate(self, dataset, stop=None, desc="val"):
        """(mean loss, accuracy) of the model on ``dataset``, in eval mode without gradients."""
        import excite.nn.functional as F
        from tqdm import tqdm

        from ..autograd import no_grad

        self.model.eval()
        loss_sum, correct, seen = 0.0, 0, 0
        bar = tqdm(total=len(dataset), unit="img", leave=False, desc=desc, disable=not self.progress or None,
                   file=sys.stderr, dynamic_ncols=True, mininterval=0.5)
        with no_grad(), bar:
            for images, labels in self._loader(dataset, batch_size=2 * self.config.batch_size):
                if stop is not None and stop.requested:
                    return float("nan"), float("nan")
                logits = self.model(images)
                loss_sum += float(F.cross_entropy(logits, labels, reduction="sum").item())
                correct += int((logits.data.argmax(1) == labels.data).sum())
                seen += len(labels)
                bar.update(len(labels))
        return loss_sum / seen, correct / seen

    def _finish_epoch(self, val_loss, val_acc, seconds):
        from ..io import save

        t = self.totals
        seen = max(1, t["seen"])
        row = dict(epoch=self.epoch + 1, train_loss=t["loss"] / seen, train_accuracy=t["correct"] / seen,
                   val_loss=val_loss, val_accuracy=val_acc, lr=float(self.optimizer.param_groups[0]["lr"]),
                   seconds=seconds)
        self.history.append(row)
        # ties in accuracy (frequent on a small validation split) go to the lower loss
        improved = (val_acc, -val_loss) > (self.best_accuracy, -self.best_loss)
        if improved:
            self.best_accuracy, self.best_loss, self.best_epoch = val_acc, val_loss, self.epoch + 1
            save(self.model.state_dict(), self.best_path)
        self.epoch, self.step = self.epoch + 1, 0
        self.totals = dict(loss=0.0, correct=0, seen=0)
        self.save_last()
        self.log(f"epoch {row['epoch']:>3}/{self.config.epochs}  train loss {row['train_loss']:.4f} "
                 f"acc {100 * row['train_accuracy']:5.1f}%  val loss {val_loss:.4f} acc {100 * val_acc:5.1f}%  "
                 f"{seconds:5.1f}s" + ("  *best*" if improved else ""))

    def _final_result(self, seconds, stop):
        from ..io import load

        self.model.load_state_dict(load(self.best_path))
        held_out = self.splits.test if self.splits.test is not None else self.splits.val
        test_loss, test_acc = self.evaluate(held_out, stop=stop, desc="test")
        if stop.requested:  # every epoch is done and saved; a resume just runs this evaluation again
            raise TrainingInterrupted(self.last_path, self.epoch - 1, self.steps_per_epoch, self.steps_per_epoch)
        result = TrainResult(out=self.out, best_checkpoint=self.best_path, last_checkpoint=self.last_path,
                             best_epoch=self.best_epoch, best_val_accuracy=self.best_accuracy,
                             test_accuracy=test_acc, test_loss=test_loss,
                             test_split="test" if self.splits.test is not None else "val", test_size=len(held_out),
                             history=self.history, seconds=seconds)
        self._write_run_json(dict(best_epoch=self.best_epoch, best_val_accuracy=self.best_accuracy,
                                  test_accuracy=test_acc, test_loss=test_loss, test_split=result.test_split,
                                  test_size=result.test_size))
        return result


def train(config, out=DEFAULT_OUT, log=None, progress=True):
    """Train ``config`` (a TrainConfig) into directory ``out``; returns a TrainResult."""
    return Trainer(config, out, log=log, progress=progress).run()
