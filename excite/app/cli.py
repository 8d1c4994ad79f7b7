"""The `excite` command: train, predict, info, convert, export, warmup and bench."""
import argparse
import json
import os
import sys
from typing import Optional, Sequence

from ..errors import ExciteError, InvalidArgumentError
from ..kernels import compiler

EXIT_ERROR = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130  # 128 + SIGINT, as shells report a Ctrl-C


def _error_line(message):
    # one line whatever the exception text holds (torch-style messages span several)
    return "excite: error: " + " ".join(str(message).split())


class _Parser(argparse.ArgumentParser):
    """argparse that reports a usage error in one line instead of a usage block."""

    def error(self, message):
        self.exit(EXIT_USAGE, _error_line(f"{message} (see '{self.prog} --help')") + "\n")


# ----- option types: a bad value is a one-line usage error naming the option -----------------------
def _integer(low):
    def parse(text):
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be >= {low}, got {value}")
        return value

    parse.__name__ = "integer"
    return parse


def _number(low, high=float("inf"), low_inclusive=False, high_inclusive=False):
    """An argparse type: a float in the interval from ``low`` to ``high`` (each end included or not)."""
    shown = f"{'[' if low_inclusive else '('}{low:g}, {high:g}{']' if high_inclusive else ')'}"

    def parse(text):
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        above = value >= low if low_inclusive else value > low
        below = value <= high if high_inclusive else value < high
        if not (above and below):  # NaN fails both
            raise argparse.ArgumentTypeError(f"must be in {shown}, got {text}")
        return value

    parse.__name__ = "number"
    return parse


_positive_float = _number(0)
_fraction = _number(0, 1, low_inclusive=True)
_non_negative_float = _number(0, low_inclusive=True)


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


def _shown(path):
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


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


# ----- predict -----------------------------------------------------------------------------------
def _add_source_options(p):
    p.add_argument("--model", metavar="NAME", help="the architecture of a checkpoint that does not record it "
                                                   "(a PyTorch state_dict, or best.pth away from its run.json)")
    p.add_argument("--image-size", metavar="N", type=_integer(8),
                   help="input side in pixels (default: as the model was trained, else 224)")


class _IntermixedParser(_Parser):
    """Options and positionals in any order (`excite predict CKPT --model M IMAGE...`): argparse alone
    would give an optional positional list its empty value at the first option."""

    _inside = False

    def parse_known_args(self, args=None, namespace=None):
        if self._inside:  # parse_known_intermixed_args calls back here for its two passes
            return super().parse_known_args(args, namespace)
        self._inside = True
        try:
            return self.parse_known_intermixed_args(args, namespace)
        finally:
            self._inside = False


def _add_predict(sub):
    p = sub.add_parser(
        "predict", help="classify images with a checkpoint or pretrained model",
        description="Print the top-k classes of each image. CHECKPOINT_OR_MODEL is an excite checkpoint "
                    "(best.pth or last.pth of excite train), a PyTorch/safetensors checkpoint of a registered model "
                    "(with --model), or a registered model name with --weights.")
    p.__class__ = _IntermixedParser  # (add_parser builds the subparsers' one class)
    p.add_argument("source", metavar="CHECKPOINT_OR_MODEL")
    p.add_argument("images", metavar="IMAGE", nargs="*")
    _add_source_options(p)
    p.add_argument("--resize-size", metavar="N", type=_integer(8),
                   help="resize the shorter side to this before the center crop (default: image size / 0.875)")
    p.add_argument("--weights", metavar="NAME",
                   help="pretrained weights of a model name: DEFAULT or e.g. IMAGENET1K_V1")
    p.add_argument("--topk", metavar="N", type=_integer(1), default=5, help="classes to show per image (default 5)")
    p.add_argument("--engine", choices=("excite", "onnxruntime"), default="excite",
                   help="run the model in excite (default) or export it to ONNX and run onnxruntime")
    p.add_argument("--json", action="store_true", help="print JSON instead of a table")
    ray = p.add_argument_group("batch inference on Ray Data (pip install \"excite[ray]\")")
    ray.add_argument("--ray", metavar="DIR_OR_GLOB",
                     help="classify every image under DIR (recursively) or matching GLOB on Ray Data: a local Ray, "
                          "or the cluster of $RAY_ADDRESS; one row per file in --out (unreadable files get an error)")
    ray.add_argument("--out", metavar="PREDICTIONS.parquet", help="with --ray: the Parquet file to write")
    ray.add_argument("--batch-size", metavar="N", type=_integer(1), default=32,
                     help="with --ray: images per model call (default 32)")
    ray.add_argument("--concurrency", metavar="N", type=_integer(1),
                     help="with --ray: model workers (default: one per CPU of the cluster)")
    ray.add_argument("--no-progress", action="store_true", help="with --ray: no progress bar")
    p.set_defaults(func=_run_predict, parser=p)


def _run_predict(args):
    from .predict import classify, load_inference_model, open_image

    if args.ray is not None:
        return _run_predict_ray(args)
    if args.out is not None:
        raise InvalidArgumentError("--out writes the predictions of --ray; without it they are printed")
    if not args.images:
        args.parser.error("the following arguments are required: IMAGE (or --ray DIR_OR_GLOB)")

    good, failed = [], []
    for path in args.images:  # bad images are reported, the rest still get predictions
        try:
            open_image(path)
            good.append(path)
        except InvalidArgumentError as e:
            failed.append((path, str(e)))
    if len(failed) == 1 and not good:
        raise InvalidArgumentError(failed[0][1])
    for _, reason in failed:
        print(_error_line(reason), file=sys.stderr)
    if not good:
        raise InvalidArgumentError(f"none of the {len(failed)} images could be read")
    loaded = load_inference_model(args.source, model=args.model, weights=args.weights, image_size=args.image_size,
                                  resize_size=args.resize_size)
    results = classify(loaded, good, topk=args.topk, engine=args.engine)
    if args.json:
        rows = [{"image": path, "top": [{"index": i, "class": name, "probability": p} for i, name, p in top]}
                for path, top in zip(good, results)]
        rows += [{"image": path, "error": reason} for path, reason in failed]
        print(json.dumps(rows, indent=1))
    else:
        width = max(len(name) for top in results for _, name, _ in top)
        for path, top in zip(good, results):
            print(path)
            for rank, (index, name, prob) in enumerate(top, 1):
                print(f"  {rank}. {name:<{width}}  {100 * prob:6.2f}%  (class {index})")
    if failed:
        print(f"excite: {len(failed)} of {len(args.images)} images could not be read (listed above)", file=sys.stderr)
        return EXIT_ERROR
    return 0


def _run_predict_ray(args):
    if args.images:
        raise InvalidArgumentError("--ray reads the images of DIR_OR_GLOB; give no IMAGE arguments with it")
    if args.out is None:
        raise InvalidArgumentError("--ray needs --out PREDICTIONS.parquet")
    if args.engine != "excite" or args.json:
        raise InvalidArgumentError("--ray runs excite's compiled model and writes Parquet; drop --engine / --json")
    from ..integrations.ray import predict_files

    rows, failed = predict_files(args.source, args.ray, args.out, weights=args.weights, topk=args.topk,
                                 model_name=args.model, image_size=args.image_size, resize_size=args.resize_size,
                                 batch_size=args.batch_size, concurrency=args.concurrency,
                                 progress=not args.no_progress)
    print(f"wrote {_shown(os.path.abspath(args.out))}: {rows} images"
          + (f", {failed} unreadable (their rows have an error)" if failed else ""))
    return EXIT_ERROR if failed else 0


# ----- info --------------------------------------------------------------------------------------
def _add_info(sub):
    p = sub.add_parser(
        "info", help="layer table of a model: output shapes, parameters, multiply-adds",
        description="Print a model's layers with output shapes, parameter counts and multiply-adds (MACs, counted "
                    "over Conv2d and Linear as torchvision's GFLOPS). MODEL is a registered name or a checkpoint; "
                    "without it, list the registered models.")
    p.add_argument("source", metavar="MODEL", nargs="?")
    _add_source_options(p)
    p.add_argument("--num-classes", metavar="N", type=_integer(1), help="classifier outputs (default: the model's)")
    p.add_argument("--depth", metavar="N", type=_integer(1), default=3,
                   help="show modules down to this nesting depth (default 3)")
    p.add_argument("--json", action="store_true", help="print JSON (every module) instead of a table")
    p.add_argument("--cache", action="store_true",
                   help="show where the compiled kernels are cached ($EXCITE_HOME/kernels), how many and how large")
    p.add_argument("--clear-cache", action="store_true",
                   help="delete the compiled kernels (they compile again on first use, or with excite warmup)")
    p.set_defaults(func=_run_info)


def _run_info(args):
    from ..vision.models import default_input_size, get_model, list_models
    from .summary import format_summary, summarize, summary_json

    if args.cache or args.clear_cache:
        from ..kernels import cache

        if args.clear_cache:
            freed = cache.clear()
            print(f"removed {cache.root()} ({freed / 2**20:.1f} MB)")
        if args.cache:
            print("\n".join(cache.describe()))
        return 0
    if args.source is None:
        print("\n".join(list_models()))
        return 0
    if os.path.exists(args.source) or _looks_like_path(args.source):
        from .predict import load_inference_model

        loaded = load_inference_model(args.source, model=args.model, image_size=args.image_size)
        if not hasattr(loaded.model, "named_modules"):
            raise InvalidArgumentError(f"{args.source} is an ONNX graph; excite info reads excite and PyTorch "
                                       "checkpoints and model names")
        model, name, size = loaded.model, loaded.name, loaded.preprocessing.image_size
    else:
        name, size = args.source, args.image_size or default_input_size(args.source)
        model = get_model(name) if args.num_classes is None else get_model(name, num_classes=args.num_classes)
    summary = summarize(model, image_size=size)
    if args.json:
        print(json.dumps(summary_json(summary), indent=1))
    else:
        print(format_summary(summary, depth=args.depth, model_name=name))
    return 0


def _looks_like_path(text):
    from .predict import looks_like_path

    return looks_like_path(text)


# ----- convert, export, bench ----------------------------------------------------------------------
def _add_convert(sub):
    p = sub.add_parser("convert", help="convert a checkpoint between .pth and .safetensors",
                       description="Convert a checkpoint between PyTorch .pth and .safetensors (the format follows "
                                   "OUT's suffix), keeping every dtype.")
    p.add_argument("src", metavar="IN")
    p.add_argument("dst", metavar="OUT")
    p.set_defaults(func=_run_convert)


_PTH_SUFFIXES = (".pth", ".pt", ".pth.tar", ".ckpt", ".bin")


def _check_output_path(path, suffixes, what):
    """A one-line error for an output whose suffix is not ``suffixes`` or whose folder does not exist."""
    if not path.lower().endswith(suffixes):
        raise InvalidArgumentError(f"{what} must end in {', '.join(suffixes)}; got {path}")
    folder = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(folder):
        raise InvalidArgumentError(f"no such directory: {_shown(folder)} (for {path})")


def _run_convert(args):
    from ..io import convert, load, save
    from .metadata import meta_of, to_strings, weights_file
    from .predict import extract_state_dict

    if not os.path.isfile(args.src):
        raise InvalidArgumentError(f"no such file: {args.src}")
    _check_output_path(args.dst, _PTH_SUFFIXES + (".safetensors",), "OUT")
    if os.path.abspath(args.src) == os.path.abspath(args.dst):
        raise InvalidArgumentError("IN and OUT are the same file")
    try:
        obj = load(args.src, keep_half=True)
        state_dict, meta = meta_of(obj, args.src)
    except ExciteError:
        obj, state_dict, meta = None, None, None  # convert reports what is wrong with the file
    if meta is None:
        convert(args.src, args.dst)
        print(f"wrote {args.dst}")
        return 0
    # the weights with their architecture, classes and preprocessing
    state_dict = state_dict if state_dict is not None else extract_state_dict(obj, args.src)
    state_dict = _in_model_order(state_dict, meta)
    if args.dst.endswith(".safetensors"):
        save(dict(state_dict), args.dst, metadata=to_strings(meta))
    else:
        save(weights_file(state_dict, meta), args.dst)
    print(f"wrote {args.dst} (the weights of {meta['model']} with its {meta['num_classes']} class names and "
          "preprocessing)")
    return 0


def _in_model_order(state_dict, meta):
    """``state_dict`` in its model's key order (safetensors files keep theirs by dtype and size, not by layer)."""
    from ..vision.models import get_model

    try:
        order = list(get_model(meta["model"], num_classes=int(meta["num_classes"])).state_dict())
    except (ExciteError, TypeError, KeyError, ValueError):
        return state_dict  # an architecture this version does not build: keep the file's order
    rank = {key: i for i, key in enumerate(order)}
    return dict(sorted(state_dict.items(), key=lambda item: rank.get(item[0], len(rank))))


def _add_export(sub):
    p = sub.add_parser("export", help="export a model or checkpoint to ONNX",
                       description="Write an ONNX graph of a checkpoint (as for predict) or of a registered model "
                                   "(pretrained with --weights, else freshly initialised).")
    p.add_argument("source", metavar="MODEL_OR_CHECKPOINT")
    p.add_argument("dst", metavar="OUT.onnx")
    _add_source_options(p)
    p.add_argument("--weights", metavar="NAME",
                   help="pretrained weights of a model name: DEFAULT or e.g. IMAGENET1K_V1")
    p.add_argument("--opset", metavar="N", type=_integer(13), default=17, help="ONNX opset (default 17)")
    p.add_argument("--static-batch", action="store_true", help="fix the batch dimension to 1")
    p.add_argument("--fold-batchnorm", action="store_true", help="fold BatchNorm into the preceding Conv")
    p.set_defaults(func=_run_export)


def _run_export(args):
    import numpy as np

    from ..onnx import export
    from ..tensor import Tensor
    from .metadata import meta_of_inference_model, to_strings
    from .predict import load_inference_model

    _check_output_path(args.dst, (".onnx",), "OUT.onnx")
    if os.path.exists(args.source) or _looks_like_path(args.source) or args.weights is not None:
        loaded = load_inference_model(args.source, model=args.model, weights=args.weights, image_size=args.image_size)
        if not hasattr(loaded.model, "state_dict"):
            raise InvalidArgumentError(f"{args.source} is already an ONNX graph")
        model, size, meta = loaded.model, loaded.preprocessing.image_size, meta_of_inference_model(loaded)
    else:
        from ..vision.models import default_input_size, get_model

        model, size, meta = get_model(args.source).eval(), args.image_size or default_input_size(args.source), None
    export(model, Tensor(np.zeros((1, 3, size, size), dtype=np.float32)), args.dst, opset=args.opset,
           dynamic_batch=not args.static_batch, fold_batchnorm=args.fold_batchnorm,
           metadata=None if meta is None else to_strings(meta))
    batch = "1" if args.static_batch else "N"
    print(f"wrote {args.dst} (input 'input' [{batch}, 3, {size}, {size}], output 'logits'"
          + (f"; {meta['num_classes']} class names and the preprocessing in its metadata)" if meta else ")"))
    return 0


def _run_bench(argv):
    from . import bench

    return bench.main(argv)


# ----- warmup --------------------------------------------------------------------------------------
def _add_warmup(sub):
    p = sub.add_parser(
        "warmup", help="compile the kernels for this CPU now (else they compile on first use)",
        description="Compile now, in worker processes side by side, the kernels excite's usual workloads need "
                    "(inference and training of the bundled model families), into the per-user cache "
                    "(excite info --cache shows it). Without this, each kernel compiles the first time it runs.")
    p.add_argument("--workers", metavar="N", type=_integer(1), help="compiling processes (default: up to 2)")
    p.set_defaults(func=_run_warmup)


def _run_warmup(args):
    import time

    from ..kernels import cache, compiler

    started = time.perf_counter()
    if args.workers:
        compiler.pool().workers = args.workers
    compiled, failed, cached = compiler.warmup()
    print(f"kernels ready in {cache.directory()}: {compiled} compiled now, {cached} already cached"
          + (f", {failed} failed (they compile on first use instead)" if failed else "")
          + f" ({time.perf_counter() - started:.1f} s)")
    return 1 if failed else 0


# ----- entry point -------------------------------------------------------------------------------
def build_parser():
    from .. import __version__

    parser = _Parser(prog="excite", description="Squeeze-and-Excitation networks (MobileNetV3, EfficientNet) on "
                                                "a NumPy engine, torchvision-compatible, without PyTorch.")
    parser.add_argument("--version", action="version", version=f"excite {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", parser_class=_Parser)
    _add_train(sub)
    _add_predict(sub)
    _add_info(sub)
    _add_convert(sub)
    _add_export(sub)
    _add_warmup(sub)
    sub.add_parser("bench", help="benchmark excite against PyTorch and onnxruntime (excite bench --help)",
                   add_help=False)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    if argv and argv[0] == "bench":  # the benchmark parses its own options
        return _guarded(lambda: _run_bench(argv[1:]))
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    if args.command == "train" and args.nproc is not None:
        from .launch import relaunch

        return _guarded(lambda: relaunch(args.nproc, _without_nproc(argv)))
    if args.command == "train" and args.distributed:
        return run_ranked(lambda: args.func(args))
    return _guarded(lambda: args.func(args))


def _without_nproc(argv):
    out, skip = [], False
    for arg in argv:
        if skip:
            skip = False
        elif arg == "--nproc":
            skip = True
        elif not arg.startswith("--nproc="):
            out.append(arg)
    return out


def run_ranked(job):
    """``_guarded(job)`` on one MPI rank: a failure here aborts every rank of the job (none waits forever)."""
    from .launch import run_ranked as run

    return run(job, _guarded)


def _guarded(run):
    """Run a verb; known failures become one line on stderr and an exit code, never a traceback."""
    from .train import TrainingInterrupted

    debug = os.environ.get("EXCITE_DEBUG") == "1"
    try:
        return run() or 0
    except TrainingInterrupted as e:
        compiler.drop_deferred()  # stopped by the user: exit now, not after the kernel builds
        ranks = _ranks()
        if ranks is None:
            print(f"excite: {e}; continue with: excite train --resume {_shown(e.checkpoint)}", file=sys.stderr)
        elif ranks[0] == 0:  # every rank stopped at the same batch; one says so
            print(f"excite: {e}; continue with: mpiexec -n {ranks[1]} excite train --distributed --resume "
                  f"{_shown(e.checkpoint)}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except KeyboardInterrupt:
        compiler.drop_deferred()
        print("excite: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED
    except (ExciteError, OSError, ImportError) as e:
        if debug:
            raise
        text = str(e) or type(e).__name__
        if isinstance(e, OSError) and e.filename is not None and e.strerror:
            text = f"{e.strerror}: {e.filename}"
        print(_error_line(_rank_prefix() + text), file=sys.stderr)
        return EXIT_ERROR


def _ranks():
    """(rank, world size) in a world of several MPI ranks, else None (without importing MPI)."""
    if "excite.distributed" not in sys.modules:
        return None
    from .launch import world_size

    if world_size() <= 1:
        return None
    from .. import distributed

    return distributed.rank(), distributed.world_size()


def _rank_prefix():
    """"rank N: " in a world of several MPI ranks (whose errors share one terminal), else nothing."""
    ranks = _ranks()
    return "" if ranks is None else f"rank {ranks[0]}: "
