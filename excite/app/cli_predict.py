"""`excite predict`: its options and printing the top classes of each image (or a Parquet file with --ray)."""
import json
import os
import sys

from ..errors import InvalidArgumentError
from .cli_base import EXIT_ERROR, _add_source_options, _error_line, _integer, _Parser, _shown


# ----- predict -----------------------------------------------------------------------------------
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

