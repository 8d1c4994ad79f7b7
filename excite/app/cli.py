"""The `excite` command: train, predict, info, convert, export, warmup and bench.

This module is the entry point: the parser, `main`, and turning failures into one line and an exit code. Each
command's options and handler are in cli_train.py, cli_predict.py, cli_info.py (info and warmup) and
cli_convert.py (convert and export); their common parts (parser, option types, exit codes) in cli_base.py.
"""
import os
import sys
from typing import Optional, Sequence

from ..errors import ExciteError
from ..kernels import compiler
from .cli_base import EXIT_ERROR, EXIT_INTERRUPTED, EXIT_USAGE, _error_line, _Parser, _shown
from .cli_convert import _add_convert, _add_export
from .cli_info import _add_info, _add_warmup
from .cli_predict import _add_predict
from .cli_train import _add_train


# ----- bench -------------------------------------------------------------------------------------
def _run_bench(argv):
    from . import bench

    return bench.main(argv)


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
