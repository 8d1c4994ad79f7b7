"""`excite train`: its options, the run directory and checkpoint a resume continues, and the closing report."""
import os

from ..errors import ExciteError, InvalidArgumentError
from .cli_base import EXIT_ERROR, _fraction, _integer, _non_negative_float, _positive_float, _shown


# ----- train -------------------------------------------------------------------------------------
# options whose value a resumed run takes from its checkpoint
_RUN_OPTIONS = ("model", "data", "epochs", "batch_size", "lr", "optimizer", "weight_decay", "label_smoothing",
                "image_size", "seed", "limit", "weights", "freeze_backbone", "unfreeze_after", "precise_bn")


def _add_train(sub):
    from .precise_bn import MODES
    from .train import DEFAULT_OUT, OPTIMIZERS

    p = sub.add_parser(
        "train", help="train or fine-tune an SE network (default: MobileNetV3-style on the bundled digits)",
        description="Train a model. With no options: a MobileNetV3-Small-style SE network on the bundled UCI "
                    "digits (8x8 images scaled to 32x32), a few minutes on two cores. Writes best.pth (weights, "
                    "loadable with torch.load(weights_only=True)), last.pth (everything --resume needs), "
                    "metrics.csv / metrics.json (one row per epoch) and curves.png (with matplotlib).")
    p.add_argument("--model", metavar="NAME",
                   help="mobilenet_v3_digits (default) or any registered model (excite info lists them)")
    p.add_argument("--weights", metavar="NAME_OR_PATH",
                   help="fine-tune from pretrained weights: a name of the model's weights (DEFAULT, IMAGENET1K_V1) "
                        "or a checkpoint file (.pth, .safetensors, an excite checkpoint); the classifier is replaced "
                        "for the data's classes and the weights' own preprocessing is used")
    p.add_argument("--freeze-backbone", action="store_true", default=None,
                   help="with --weights: train only the classifier")
    p.add_argument("--unfreeze-after", metavar="N", type=_integer(1),
                   help="with --freeze-backbone: train every layer from epoch N+1 on")
    p.add_argument("--precise-bn", choices=MODES,
                   help="recompute BatchNorm statistics on training images before each evaluation: auto (default: "
                        "when the running averages cannot have settled), always, never")
    p.add_argument("--strict-data", action="store_true",
                   help="stop at an unreadable image (default: skip it with a warning)")
    p.add_argument("--data", metavar="DIR",
                   help="an ImageFolder (a folder of images per class); with train/ and val/ subfolders those are "
                        "used, else a random tenth is held out for validation. Default: the bundled digits")
    p.add_argument("--epochs", metavar="N", type=_integer(1), help="epochs to train (default 10)")
    p.add_argument("--batch-size", metavar="N", type=_integer(1),
                   help="images per batch (default: 64, less for small data so an epoch has at least 8 steps)")
    p.add_argument("--lr", metavar="LR", type=_positive_float,
                   help="peak learning rate (default: from --optimizer and the batch size, lower with --weights)")
    p.add_argument("--optimizer", choices=sorted(OPTIMIZERS), help="default adamw")
    p.add_argument("--weight-decay", metavar="WD", type=_non_negative_float, help="default depends on --optimizer")
    p.add_argument("--label-smoothing", metavar="EPS", type=_fraction,
                   help="label smoothing of the cross-entropy (default 0.1)")
    p.add_argument("--image-size", metavar="N", type=_integer(8),
                   help="input side in pixels (default 32 for the digits network, 224 otherwise)")
    p.add_argument("--out", metavar="DIR", help=f"run directory (default {DEFAULT_OUT}, or {DEFAULT_OUT}2, ... "
                                                "when it already holds a run)")
    p.add_argument("--resume", nargs="?", const=True, metavar="LAST_PTH",
                   help="continue a stopped run from its last.pth (default: the latest run's); the result is the "
                        "same as if it had never stopped. With a larger --epochs it extends a run, finished or not")
    p.add_argument("--seed", metavar="N", type=_integer(0),
                   help="seed of initialisation, data order and augmentation (default 0)")
    p.add_argument("--workers", metavar="N", type=_integer(0),
                   help="data-loading threads (default 0 for digits, 2 for --data)")
    p.add_argument("--limit", metavar="N", type=_integer(2), help="use at most N images of each split (quick trials)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--distributed", action="store_true",
                   help="train one model on the MPI ranks of `mpiexec -n N excite train --distributed ...` "
                        "(data parallel: --batch-size is per rank, the effective batch N times it; rank 0 prints "
                        "and saves). Needs pip install \"excite[distributed]\"")
    p.add_argument("--nproc", metavar="N", type=_integer(1),
                   help="start N ranks on this machine with mpiexec (implies --distributed)")
    p.set_defaults(func=_run_train)


def _train_config(args):
    from .train import TrainConfig

    given = {k: getattr(args, k) for k in _RUN_OPTIONS if getattr(args, k) is not None}
    return TrainConfig(**given, workers=args.workers, strict_data=args.strict_data)


def _check_resume_options(args, stored, path):
    for key in _RUN_OPTIONS:
        value = getattr(args, key)
        if value is None or (key == "epochs" and value > stored.get(key, 0)):  # more epochs extend the run
            continue
        if key == "epochs" and value < stored.get(key, 0):
            raise InvalidArgumentError(f"--resume can extend a run, not shorten it: {_shown(path)} was planned for "
                                       f"{stored[key]} epochs, got --epochs {value}")
        if key == "data":
            value = os.path.abspath(value)
        if value != stored.get(key):
            option = "--" + key.replace("_", "-")
            raise InvalidArgumentError(
                f"--resume continues the run in {_shown(path)}, started with {option} {stored.get(key)}; "
                f"got {option} {getattr(args, key)} (start a new run with --out to change it)")


def _run_dir_and_checkpoint(args):
    """(run directory, checkpoint path, checkpoint) of `excite train`: the run ``--resume`` names (path and
    checkpoint None otherwise: a fresh directory, or ``--out`` when it holds no run yet)."""
    from .train import DEFAULT_OUT, fresh_run_dir, latest_run, load_run_checkpoint

    if args.resume is not None:
        if args.resume is True:
            out = args.out or latest_run(DEFAULT_OUT) or DEFAULT_OUT
            path = os.path.join(out, "last.pth")
            if not os.path.isfile(path):
                raise InvalidArgumentError(f"nothing to resume: no last.pth in {_shown(os.path.abspath(out))}")
        else:
            path, out = args.resume, args.out
            if not os.path.isfile(path):
                raise InvalidArgumentError(f"no such file: {path}")
        checkpoint = load_run_checkpoint(path)
        _check_resume_options(args, checkpoint["config"], path)
        return out, path, checkpoint
    if args.out is None:
        return fresh_run_dir(DEFAULT_OUT), None, None
    if os.path.exists(os.path.join(args.out, "last.pth")):
        raise InvalidArgumentError(f"{args.out} already holds a run; continue it with --resume, or pick another --out")
    return args.out, None, None


def _run_train(args):
    from .train import Trainer

    progress = not args.no_progress
    if args.distributed:
        return _run_train_distributed(args)
    out, path, checkpoint = _run_dir_and_checkpoint(args)
    if checkpoint is not None:
        trainer = Trainer.resume(path, out=out, progress=progress, workers=args.workers, checkpoint=checkpoint,
                                 epochs=args.epochs)
    else:
        trainer = Trainer(_train_config(args), out, progress=progress)
    result = trainer.run()
    _report(result)
    return 0


def _report(result):
    print(f"{result.test_split} accuracy: {100 * result.test_accuracy:.2f}% ({result.test_size} images; best epoch "
          f"{result.best_epoch}, val accuracy {100 * result.best_val_accuracy:.2f}%) in {result.seconds:.0f}s")
    print(f"best weights: {_shown(result.best_checkpoint)}  (excite predict {_shown(result.best_checkpoint)} "
          "IMAGE; torch.load(..., weights_only=True))")
    print(f"resume state: {_shown(result.last_checkpoint)}")
    print(f"metrics: {_shown(result.metrics_csv)}, {_shown(result.metrics_json)}; curves: "
          + (_shown(result.plot) if result.plot else "no plot (install matplotlib: pip install 'excite[plot]')"))


def _run_train_distributed(args):
    """`excite train --distributed` on one rank of an MPI job: rank 0 decides the run directory and reads the
    checkpoint to resume, every rank trains, rank 0 prints and saves."""
    from .. import distributed
    from .train import Trainer

    comm = distributed.init()
    main_rank = comm.Get_rank() == 0

    decided = None
    if main_rank:
        try:
            decided = _run_dir_and_checkpoint(args)
        except ExciteError as e:
            decided = e
    # the checkpoint travels to the other ranks: they need no access to rank 0's files
    decided = comm.bcast(decided, root=0)
    if isinstance(decided, Exception):
        if not main_rank:
            comm.Barrier()  # never passed: rank 0 reports the error, then its abort ends this rank too
            return EXIT_ERROR
        raise decided
    out, path, checkpoint = decided
    progress = not args.no_progress
    if path is not None:
        trainer = Trainer.resume(path, out=out, progress=progress, workers=args.workers, checkpoint=checkpoint,
                                 epochs=args.epochs, distributed=True)
    else:
        trainer = Trainer(_train_config(args), out, progress=progress, distributed=True)
    result = trainer.run()
    if result is not None:
        _report(result)
    return 0
