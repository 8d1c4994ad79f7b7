"""`excite info` (a model's layer table, the kernel cache) and `excite warmup` (compiling the kernels ahead)."""
import json
import os

from ..errors import InvalidArgumentError
from .cli_base import _add_source_options, _integer, _looks_like_path


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
