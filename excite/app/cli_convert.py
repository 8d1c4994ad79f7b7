"""`excite convert` and `excite export`: a checkpoint rewritten as .pth or .safetensors, or a model as ONNX."""
import os

from ..errors import ExciteError, InvalidArgumentError
from .cli_base import _add_source_options, _integer, _looks_like_path, _shown


# ----- convert, export ----------------------------------------------------------------------------
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
