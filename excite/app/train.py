"""The training loop behind `excite train`: data, model, optimizer, schedule, checkpoints, resume and Ctrl-C.

A run is a pure function of its config: the data order of epoch ``e`` comes from the seed and ``e``,
augmentations from (seed, epoch, batch), dropout from (seed, epoch, step), the precise-BN batches from
(seed, epoch). So a run stopped anywhere and resumed from ``last.pth`` ends with the same weights as one
that never stopped.
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
from typing import Callable, Optional

import numpy as np

from ..errors import CheckpointError, ExciteError, InvalidArgumentError
from . import defaults, finetune, metrics, precise_bn
from .defaults import OPTIMIZERS
from .run_dir import (CHECKPOINT_FORMAT, DEFAULT_OUT, fresh_run_dir, latest_run, load_run_checkpoint,  # noqa: F401
                      remove_if_failed)
from .divergence import DivergenceGuard
from .train_data import EpochBatches, build_splits, collate_or_skip

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


class TrainingDiverged(ExciteError):
    """The loss became NaN/inf or exploded; the run stopped, keeping the checkpoints of the last good epoch."""


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
    metrics_csv: str = None
    metrics_json: str = None
    plot: str = None  # None without matplotlib


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


# ----- Ctrl-C ----------------------------------------------------------------------------------
def _compiling():
    compiler = sys.modules.get("excite.kernels.compiler")  # not imported: nothing compiles
    return compiler is not None and compiler.waiting()


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
        if self.requested or _compiling():
            raise KeyboardInterrupt  # (while kernels compile: at once, the next safe point may be a minute off)
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


# ----- the loop ----------------------------------------------------------------------------------
class Trainer:
    """Runs one training run; ``Trainer(config, out).run()`` or ``Trainer.resume(last_pth).run()``."""

    def __init__(self, config, out, log=None, progress=True, _checkpoint=None, distributed=False):
        from ..random import manual_seed
        from ..vision.models import default_input_size, get_model

        self.rank, self.world = _ranks(distributed)
        self.is_main = self.rank == 0  # only rank 0 prints, logs and writes files
        self.log = (log or (lambda msg: print(msg, flush=True))) if self.is_main else (lambda msg: None)
        self.out = os.path.abspath(out)
        self.progress = progress and self.is_main
        self.skipped = set()
        if _checkpoint is not None and int(config.world_size) != self.world:
            raise InvalidArgumentError(
                f"this run trained on {config.world_size} rank{'s' if config.world_size != 1 else ''}, this resume "
                f"has {self.world}: resume it as it ran"
                + (f" (mpiexec -n {config.world_size} excite train --distributed --resume ...)"
                   if config.world_size > 1 else " (excite train --resume ..., without mpiexec)"))
        config = dataclasses.replace(config, world_size=self.world)
        c = config.resolved()
        pretrained = None
        if _checkpoint is not None:
            meta = _checkpoint["meta"]
            prep = {k: meta[k] for k in ("image_size", "resize_size", "interpolation", "mean", "std", "grayscale")}
        elif c.weights is not None:
            pretrained = finetune.load_pretrained(c.weights, c.model)
            c.model = pretrained.model_name
            prep = dict(pretrained.preprocessing)
            if c.image_size is not None and c.image_size != prep["image_size"]:
                # keep the weights' relation of resize to crop (256 / 224), or a square resize square
                square = isinstance(prep["resize_size"], (list, tuple))
                ratio = (prep["resize_size"][0] if square else prep["resize_size"]) / prep["image_size"]
                resize = round(c.image_size * ratio)
                prep.update(image_size=c.image_size, resize_size=[resize, resize] if square else resize)
            c.image_size = prep["image_size"]
        else:
            prep = None
        if c.image_size is None:
            c.image_size = default_input_size(c.model)
        self.splits = build_splits(c, prep, on_skip=self._skip)
        if _checkpoint is not None and _checkpoint["meta"]["class_names"] != self.splits.classes:
            raise CheckpointError(
                f"the data now has classes {self.splits.classes[:5]}..., the checkpoint was trained on "
                f"{_checkpoint['meta']['class_names'][:5]}...; resume needs the same data")
        choice = defaults.choose(c, len(self.splits.train), finetune=c.weights is not None, world_size=self.world)
        c.batch_size, c.lr, c.weight_decay, c.warmup_steps = (choice.batch_size, choice.lr, choice.weight_decay,
                                                              choice.warmup_steps)
        self.config, self.choices = c, choice.reasons
        manual_seed(c.seed)
        if pretrained is not None:
            self.model = finetune.build_model(pretrained, self.splits.classes, self.log)
        else:
            self.model = get_model(c.model, num_classes=len(self.splits.classes))
        self.optimizer = build_optimizer(c, self.model.parameters())
        self.batches = EpochBatches(len(self.splits.train), c.batch_size, c.seed, rank=self.rank, world=self.world)
        self.steps_per_epoch = len(self.batches)
        self.scheduler = build_scheduler(self.optimizer, c.epochs * self.steps_per_epoch, c.warmup_steps)
        self.epoch, self.step = 0, 0
        self.totals = dict(loss=0.0, correct=0, seen=0)
        self.best_accuracy, self.best_loss, self.best_epoch, self.history = -1.0, math.inf, -1, []
        self.guard = DivergenceGuard(len(self.splits.classes))
        self.last_path = os.path.join(self.out, "last.pth")
        self.best_path = os.path.join(self.out, "best.pth")
        self._announced_precise_bn = False
        if _checkpoint is not None:
            self._load_state(_checkpoint)
        if self.world > 1:
            self._check_ranks_agree()

    def _check_ranks_agree(self):
        """Every rank runs the same configuration on the same model, starting from rank 0's weights."""
        from .. import distributed

        settings = {k: v for k, v in dataclasses.asdict(self.config).items() if k != "workers"}
        seen = distributed._world().allgather(settings)
        differing = sorted({k for other in seen for k in settings if other.get(k) != settings.get(k)})
        if differing:
            raise InvalidArgumentError(
                "the ranks disagree on the run: " + "; ".join(
                    f"{k}: " + ", ".join(f"rank {r} {other.get(k)!r}" for r, other in enumerate(seen))
                    for k in differing) + "; start every rank with the same options")
        # also refuses ranks that built different models (another --model, --weights or checkpoint)
        distributed.broadcast_parameters(self.model)

    @classmethod
    def resume(cls, path, out=None, log=None, progress=True, workers=None, checkpoint=None, epochs=None,
               distributed=False):
        """Continue the run saved in ``path`` (its already loaded contents may come as ``checkpoint``).

        ``epochs`` larger than the run's extends it (a finished run too): the cosine schedule is re-planned
        for the new length and continues from the step reached.
        """
        ckpt = load_run_checkpoint(path) if checkpoint is None else checkpoint
        config = TrainConfig(**{k: v for k, v in ckpt["config"].items() if k in TrainConfig.__dataclass_fields__})
        if workers is not None:
            config.workers = workers  # the only setting that does not change the result
        extended = epochs is not None and epochs != config.epochs
        if extended:
            if epochs < config.epochs:
                raise InvalidArgumentError(f"--resume can extend a run, not shorten it: it was planned for "
                                           f"{config.epochs} epochs, got --epochs {epochs}")
            config.epochs = int(epochs)
        trainer = cls(config, out or os.path.dirname(os.path.abspath(path)), log=log, progress=progress,
                      _checkpoint=dict(ckpt, _extended=extended), distributed=distributed)
        return trainer

    # -- state ----------------------------------------------------------------------------------
    def meta(self):
        c = self.config
        return dict(model=c.model, num_classes=len(self.splits.classes), class_names=list(self.splits.classes),
                    **self.splits.preprocessing, **({"weights": str(c.weights)} if c.weights is not None else {}))

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
            "divergence": self.guard.state(),
            "rng": _rng_state_text(),
            "meta": self.meta(),
            "config": dataclasses.asdict(self.config),
        }

    def _load_state(self, ckpt):
        self.model.load_state_dict(ckpt["model"])
        self.optimizer.load_state_dict(ckpt["optimizer"])
        self.epoch, self.step = int(ckpt["epoch"]), int(ckpt["step"])
        if ckpt.get("_extended"):
            # a longer run: the new schedule, advanced to where the run is (the optimizer's lr follows it)
            for _ in range(self.epoch * self.steps_per_epoch + self.step):
                self.scheduler.step()
        else:
            self.scheduler.load_state_dict(ckpt["lr_scheduler"])
        self.totals = dict(ckpt["epoch_totals"])
        self.best_accuracy, self.best_epoch = float(ckpt["best_accuracy"]), int(ckpt["best_epoch"])
        self.best_loss = float(ckpt["best_loss"])
        self.history = list(ckpt["history"])
        if "divergence" in ckpt:
            self.guard = DivergenceGuard(len(self.splits.classes), ckpt["divergence"])
        _restore_rng(ckpt["rng"])

    def save_last(self):
        from ..io import save

        if self.is_main:
            save(self.state(), self.last_path)

    def _write_run_json(self, extra):
        if not self.is_main:
            return
        # lets `excite predict best.pth` find the architecture and preprocessing of a bare state_dict
        info = dict(meta=self.meta(), config=dataclasses.asdict(self.config), **extra)
        tmp = os.path.join(self.out, f".run.json.{os.getpid()}.tmp")
        with open(tmp, "w") as f:
            json.dump(info, f, indent=2)
        os.replace(tmp, os.path.join(self.out, "run.json"))

    def _skip(self, path, reason):
        # called from loader threads; set.add is atomic
        if path not in self.skipped:
            self.skipped.add(path)
            reason = reason.replace(f"cannot read image {path}: ", "")
            if reason.startswith("cannot identify image file"):
                reason = "Pillow cannot identify its format"
            print(f"warning: skipping unreadable image {path} ({reason}); --strict-data stops instead",
                  file=sys.stderr, flush=True)

    # -- running --------------------------------------------------------------------------------
    def _loader(self, dataset, batch_sampler=None, batch_size=None, shuffle=False, seed=None):
        from ..data import DataLoader

        # each rank augments its images with a generator of its own (rank 0's is the single-process one)
        seed = self.config.seed + 1_000_003 * self.rank if seed is None else seed
        if batch_sampler is not None:
            return DataLoader(dataset, batch_sampler=batch_sampler, num_workers=self.config.workers,
                              collate_fn=collate_or_skip, seed=seed)
        return DataLoader(dataset, batch_size=batch_size, shuffle=shuffle, num_workers=self.config.workers,
                          collate_fn=collate_or_skip, seed=seed)

    def describe(self):
        """The run's first lines of log: what trains on what, and every value chosen automatically."""
        c = self.config
        epochs = f"{c.epochs} epoch" + ("s" if c.epochs > 1 else "")
        lines = [f"training {c.model} on {'digits' if c.data is None else c.data} "
                 f"({len(self.splits.train)} train / {len(self.splits.val)} val images, "
                 f"{len(self.splits.classes)} classes, {c.image_size}x{c.image_size}) for {epochs}; "
                 f"checkpoints in {self.out}"]
        lines.append(f"optimizer {c.optimizer}, lr {c.lr:.3g}, weight decay {c.weight_decay:g}, batch {c.batch_size} "
                     f"({self.steps_per_epoch} steps an epoch), {c.warmup_steps} warm-up steps then cosine"
                     + (f"; chosen: {'; '.join(self.choices)}" if self.choices else ""))
        if self.world > 1:
            lines.append(f"distributed over {self.world} ranks: batch {c.batch_size} per rank, effective batch "
                         f"{c.batch_size * self.world} (gradients averaged over the ranks each step); BatchNorm "
                         "statistics are each rank's own, rank 0's are saved")
        if c.freeze_backbone:
            lines.append("backbone frozen: training only " + finetune.head_name(self.model)
                         + (f" until epoch {c.unfreeze_after}, then every layer" if c.unfreeze_after else ""))
        return lines

    def run(self, _stop_at=None):
        """Train to the configured number of epochs; returns a TrainResult.

        ``_stop_at=(epoch, step)`` acts as a Ctrl-C arriving just before batch ``step`` of ``epoch`` is
        trained (both counted from 0; tests use it).
        """
        created = not os.path.exists(self.out)
        if self.is_main:
            os.makedirs(self.out, exist_ok=True)
        try:
            return self._run(_stop_at)
        except (TrainingInterrupted, KeyboardInterrupt):
            raise
        except BaseException:
            if self.is_main:
                remove_if_failed(self.out, created)
            raise

    # -- the ranks of a distributed run agree ----------------------------------------------------
    def _sum_over_ranks(self, values):
        """``values`` (numbers) summed over the ranks; as they are in a single process."""
        if self.world == 1:
            return list(values)
        from mpi4py import MPI

        from .. import distributed

        array = np.array(values, dtype=np.float64)
        distributed._world().Allreduce(MPI.IN_PLACE, array, op=MPI.SUM)
        return array.tolist()

    def _agree_to_stop(self, stop):
        """A Ctrl-C seen by any rank stops every rank at the same batch."""
        if self.world > 1:
            stop.requested = self._sum_over_ranks([float(stop.requested)])[0] > 0

    def _run(self, stop_at):
        from ..kernels import compiler

        compiler.expect("train")  # an empty kernel cache compiles the training builds first
        c = self.config
        started = time.perf_counter()
        stop = _StopRequest()
        with stop.installed():  # before the first line of output, so a Ctrl-C after it always saves
            for line in self.describe():
                self.log(line)
            if self.epoch or self.step:
                self.log(f"resuming at epoch {self.epoch + 1}, batch {self.step}/{self.steps_per_epoch}")
            train_loader = self._loader(self.splits.train, batch_sampler=self.batches)
            while self.epoch < c.epochs:
                epoch_started = time.perf_counter()
                self._set_frozen()
                self._train_epoch(train_loader, stop, stop_at)
                recalibrated, val_loss, val_acc = False, float("nan"), float("nan")
                if self.is_main:  # the other ranks wait for it at the next exchange
                    recalibrated = False if stop.requested else self._precise_bn()
                    val_loss, val_acc = self.evaluate(self.splits.val, stop=stop)
                self._agree_to_stop(stop)
                if stop.requested:
                    self._stop()
                self._finish_epoch(val_loss, val_acc, time.perf_counter() - epoch_started, recalibrated)
            return self._final_result(time.perf_counter() - started, stop)

    def _set_frozen(self):
        c = self.config
        if not c.freeze_backbone:
            return
        frozen = finetune.frozen_at(c, self.epoch)
        finetune.set_backbone_trainable(self.model, not frozen)
        if not frozen and self.epoch == c.unfreeze_after and self.step == 0:
            self.log(f"epoch {self.epoch + 1}: unfreezing the backbone, every layer trains from here on")

    def _stop(self):
        if self.is_main:
            print(f"\nstopping: saving {self.last_path} (Ctrl-C again aborts without saving)", file=sys.stderr,
                  flush=True)
        self.save_last()
        raise TrainingInterrupted(self.last_path, self.epoch, self.step, self.steps_per_epoch)

    def _diverged(self, reason):
        c = self.config
        kept = [f"{os.path.basename(self.best_path)} (epoch {self.best_epoch})"] if os.path.exists(self.best_path) else []
        if os.path.exists(self.last_path):
            kept.append(f"{os.path.basename(self.last_path)} (end of epoch {self.epoch})")
        if self.history and self.is_main:
            metrics.write_metrics(self.out, self.history)
        where = f"epoch {self.epoch + 1}, batch {self.step + 1}"
        raise TrainingDiverged(
            f"training diverged at {where}: {reason}; stopped. "
            + (f"Kept {' and '.join(kept)} in {self.out}. " if kept else "Nothing was saved. ")
            + f"Try a lower --lr than {c.lr:.3g}" + ("" if c.optimizer == "sgd" else " or --optimizer sgd"))

    def _train_epoch(self, loader, stop, stop_at):
        import excite.nn.functional as F
        from tqdm import tqdm

        from ..random import use_generator

        c = self.config
        self.model.train()
        if finetune.frozen_at(c, self.epoch):
            finetune.backbone_to_eval(self.model)
        self.batches.set_epoch(self.epoch)
        self.batches.skip = self.step
        loader.set_epoch(self.epoch)
        remaining = self.steps_per_epoch - self.step
        bar = tqdm(total=remaining * min(c.batch_size * self.world, len(self.splits.train)), unit="img", leave=False,
                   desc=f"epoch {self.epoch + 1}/{c.epochs}", disable=not self.progress or None, file=sys.stderr,
                   dynamic_ncols=True, mininterval=0.5)
        skipped_before = len(self.skipped)
        with bar:
            for index, batch in enumerate(loader):
                if index < self.batches.skip:  # already trained before the resume
                    continue
                if self.world > 1:
                    done = self._distributed_step(batch, stop, stop_at)
                    bar.update(done)
                    bar.set_postfix(loss=f"{self.totals['loss'] / max(1, self.totals['seen']):.4f}", refresh=False)
                    continue
                if batch is None:  # every image of the batch unreadable: the step passes without an update
                    self.step += 1
                    self.scheduler.step()
                    continue
                if stop_at is not None and (self.epoch, self.step) == tuple(stop_at):
                    stop.requested = True
                if stop.requested:
                    self._stop()
                images, labels = batch
                with use_generator(np.random.default_rng([c.seed, 4, self.epoch, self.step])):
                    logits = self.model(images)
                    loss = F.cross_entropy(logits, labels, label_smoothing=c.label_smoothing)
                    value = float(loss.item())
                    problem = self.guard.check(value)
                    if problem is not None:
                        self._diverged(problem)
                    self.optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                self.optimizer.step()
                self.scheduler.step()
                self.step += 1
                n = len(labels)
                self.totals["loss"] += value * n
                self.totals["correct"] += int((logits.data.argmax(1) == labels.data).sum())
                self.totals["seen"] += n
                bar.update(n)
                bar.set_postfix(loss=f"{self.totals['loss'] / self.totals['seen']:.4f}", refresh=False)
        if self.totals["seen"] == 0 and self.skipped:
            raise ExciteError(f"no training image of epoch {self.epoch + 1} could be read ({len(self.skipped)} "
                              f"unreadable, e.g. {sorted(self.skipped)[0]})")
        if len(self.skipped) > skipped_before:
            self.log(f"epoch {self.epoch + 1}: skipped {len(self.skipped)} unreadable image(s) so far: "
                     + ", ".join(sorted(self.skipped)))

    def _distributed_step(self, batch, stop, stop_at):
        """One step of every rank on its share of the global batch; returns the images of the whole step.

        The ranks exchange their loss sums and image counts first (so all agree on the logged loss, on
        divergence, and on a step where no image could be read anywhere), then the gradients. Each rank's
        loss is weighted by its share of the step's images, so the averaged gradient is that of the mean
        loss over the global batch even when some images were unreadable.
        """
        import excite.nn.functional as F

        from .. import distributed
        from ..random import use_generator

        c = self.config
        if stop_at is not None and (self.epoch, self.step) == tuple(stop_at):
            stop.requested = True
        self._agree_to_stop(stop)
        if stop.requested:
            self._stop()
        loss, local = None, [0.0, 0.0, 0.0]
        with use_generator(np.random.default_rng([c.seed, 4, self.epoch, self.step, self.rank])):
            if batch is not None:
                images, labels = batch
                logits = self.model(images)
                loss = F.cross_entropy(logits, labels, label_smoothing=c.label_smoothing)
                n = len(labels)
                local = [float(loss.item()) * n, float((logits.data.argmax(1) == labels.data).sum()), float(n)]
            loss_sum, correct, seen = self._sum_over_ranks(local)
            if seen == 0:  # every image of the step unreadable on every rank: no update
                self.step += 1
                self.scheduler.step()
                return 0
            problem = self.guard.check(loss_sum / seen)
            if problem is not None:
                self._diverged(problem)
            self.optimizer.zero_grad(set_to_none=True)
            if loss is not None:
                (loss * (local[2] * self.world / seen)).backward()
        distributed.all_reduce_gradients(self.model)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        self.totals["loss"] += loss_sum
        self.totals["correct"] += int(correct)
        self.totals["seen"] += int(seen)
        return int(seen)

    def _precise_bn(self):
        """Recompute the BatchNorm statistics when they cannot have settled (config.precise_bn); True if done."""
        c = self.config
        if c.precise_bn == "never":
            return False
        steps_done = self.epoch * self.steps_per_epoch + self.step
        reason = "--precise-bn always" if c.precise_bn == "always" else \
            precise_bn.needs_recalibration(self.model, steps_done, self.steps_per_epoch)
        if reason is None:
            return False
        loader = self._loader(self.splits.train, batch_size=c.batch_size, shuffle=True, seed=c.seed + 7919)
        loader.set_epoch(self.epoch)
        layers, images = precise_bn.recompute(self.model, loader)
        if layers and not self._announced_precise_bn:
            self._announced_precise_bn = True
            self.log(f"precise BN: recomputing the running statistics of {layers} BatchNorm layers on {images} "
                     f"training images before each evaluation ({reason}; --precise-bn never turns it off)")
        return bool(layers)

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
            for batch in self._loader(dataset, batch_size=2 * self.config.batch_size):
                if stop is not None and stop.requested:
                    return float("nan"), float("nan")
                if batch is None:  # every image of the batch unreadable
                    continue
                images, labels = batch
                logits = self.model(images)
                loss_sum += float(F.cross_entropy(logits, labels, reduction="sum").item())
                correct += int((logits.data.argmax(1) == labels.data).sum())
                seen += len(labels)
                bar.update(len(labels))
        if seen == 0:
            raise ExciteError(f"no {desc} image could be read")
        return loss_sum / seen, correct / seen

    def _finish_epoch(self, val_loss, val_acc, seconds, recalibrated):
        from ..io import save

        t = self.totals
        seen = max(1, t["seen"])
        row = dict(epoch=self.epoch + 1, train_loss=t["loss"] / seen, train_accuracy=t["correct"] / seen,
                   val_loss=val_loss, val_accuracy=val_acc, lr=float(self.optimizer.param_groups[0]["lr"]),
                   seconds=seconds, precise_bn=bool(recalibrated))
        self.history.append(row)
        # ties in accuracy (frequent on a small validation split) go to the lower loss
        improved = (val_acc, -val_loss) > (self.best_accuracy, -self.best_loss)
        if improved:
            self.best_accuracy, self.best_loss, self.best_epoch = val_acc, val_loss, self.epoch + 1
            if self.is_main:
                save(self.model.state_dict(), self.best_path)
        self.epoch, self.step = self.epoch + 1, 0
        self.totals = dict(loss=0.0, correct=0, seen=0)
        self.save_last()
        if self.is_main:
            metrics.write_metrics(self.out, self.history)
        self.log(f"epoch {row['epoch']:>3}/{self.config.epochs}  train loss {row['train_loss']:.4f} "
                 f"acc {100 * row['train_accuracy']:5.1f}%  val loss {val_loss:.4f} acc {100 * val_acc:5.1f}%  "
                 f"{seconds:5.1f}s" + ("  *best*" if improved else ""))

    def _final_result(self, seconds, stop):
        from ..io import load

        if not self.is_main:  # rank 0 evaluates and reports; the others are done
            self._agree_to_stop(stop)
            return None

        self.model.load_state_dict(load(self.best_path))
        held_out = self.splits.test if self.splits.test is not None else self.splits.val
        test_loss, test_acc = self.evaluate(held_out, stop=stop, desc="test")
        self._agree_to_stop(stop)
        if stop.requested:  # every epoch is done and saved; a resume just runs this evaluation again
            raise TrainingInterrupted(self.last_path, self.epoch - 1, self.steps_per_epoch, self.steps_per_epoch)
        csv_path, json_path = metrics.write_metrics(self.out, self.history)
        plot = metrics.plot_curves(self.out, self.history, title=f"{self.config.model} on "
                                   f"{'digits' if self.config.data is None else os.path.basename(self.config.data)}")
        result = TrainResult(out=self.out, best_checkpoint=self.best_path, last_checkpoint=self.last_path,
                             best_epoch=self.best_epoch, best_val_accuracy=self.best_accuracy,
                             test_accuracy=test_acc, test_loss=test_loss,
                             test_split="test" if self.splits.test is not None else "val", test_size=len(held_out),
                             history=self.history, seconds=seconds, metrics_csv=csv_path, metrics_json=json_path,
                             plot=plot)
        self._write_run_json(dict(best_epoch=self.best_epoch, best_val_accuracy=self.best_accuracy,
                                  test_accuracy=test_acc, test_loss=test_loss, test_split=result.test_split,
                                  test_size=result.test_size))
        if self.skipped:
            self.log(f"skipped {len(self.skipped)} unreadable image(s): {', '.join(sorted(self.skipped))}")
        return result


def _ranks(distributed):
    """(rank, world size) of this process: (0, 1) unless ``distributed`` (then excite.distributed is initialised)."""
    if not distributed:
        return 0, 1
    from .. import distributed as dist

    dist.init()
    return dist.rank(), dist.world_size()


def train(config: TrainConfig, out: str = DEFAULT_OUT, log: Optional[Callable[[str], None]] = None,
          progress: bool = True) -> "TrainResult":
    """Train ``config`` (a TrainConfig) into directory ``out``; returns a TrainResult."""
    return Trainer(config, out, log=log, progress=progress).run()
