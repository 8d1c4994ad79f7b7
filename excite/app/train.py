"""The training loop behind `excite train`: data, model, optimizer, schedule, checkpoints, resume and Ctrl-C.

A run is a pure function of its config: the data order of epoch ``e`` comes from the seed and ``e``,
augmentations from (seed, epoch, batch), dropout from (seed, epoch, step), the precise-BN batches from
(seed, epoch). So a run stopped anywhere and resumed from ``last.pth`` ends with the same weights as one
that never stopped.

The loop is here (Trainer, train); its parts are beside it: train_config.py (TrainConfig), train_data.py
(splits and batches), train_optim.py (optimizer and schedule), train_checkpoint.py (last.pth, run.json and
resume), train_ranks.py (the ranks of a distributed run), train_stop.py (Ctrl-C, and the exceptions of a run
that stops early).
"""
import dataclasses
import math
import os
import sys
import time
from typing import Callable, Optional

import numpy as np

from ..errors import CheckpointError, ExciteError, InvalidArgumentError
from . import defaults, finetune, metrics, precise_bn
from .defaults import OPTIMIZERS  # noqa: F401
from .run_dir import (CHECKPOINT_FORMAT, DEFAULT_OUT, fresh_run_dir, latest_run, load_run_checkpoint,  # noqa: F401
                      remove_if_failed)
from .divergence import DivergenceGuard
from .train_checkpoint import TrainerCheckpoint
from .train_config import DEFAULT_MODEL, TrainConfig  # noqa: F401
from .train_data import EpochBatches, build_splits, collate_or_skip
from .train_optim import build_optimizer, build_scheduler
from .train_ranks import TrainerRanks, _ranks
from .train_stop import TrainingDiverged, TrainingInterrupted, _StopRequest


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


# ----- the loop ----------------------------------------------------------------------------------
class Trainer(TrainerCheckpoint, TrainerRanks):
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


def train(config: TrainConfig, out: str = DEFAULT_OUT, log: Optional[Callable[[str], None]] = None,
          progress: bool = True) -> "TrainResult":
    """Train ``config`` (a TrainConfig) into directory ``out``; returns a TrainResult."""
    return Trainer(config, out, log=log, progress=progress).run()
