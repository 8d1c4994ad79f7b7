"""What a training run saves and resumes from: the Trainer's state in last.pth, run.json, and Trainer.resume."""
import dataclasses
import json
import os

from ..errors import InvalidArgumentError
from .divergence import DivergenceGuard
from .run_dir import CHECKPOINT_FORMAT, load_run_checkpoint
from .train_config import TrainConfig


# ----- checkpoints -------------------------------------------------------------------------------
def _rng_state_text():
    from ..random import get_rng_state

    # numpy's PCG64 state holds 128-bit ints; as text it stays plain data any unpickler reads
    return json.dumps(get_rng_state())


def _restore_rng(text):
    from ..random import set_rng_state

    set_rng_state(json.loads(text))


class TrainerCheckpoint:
    """The Trainer's saving and resuming (a base class of Trainer, which holds the state these read)."""

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
