"""The `excite` command's common parts: exit codes, the one-line-error parser, option types, shown paths."""
import argparse

from .run_dir import _shown  # noqa: F401  (the commands show paths the way the run folders do)

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


# ----- options of the commands that load a model (predict, info, export) ---------------------------
def _add_source_options(p):
    p.add_argument("--model", metavar="NAME", help="the architecture of a checkpoint that does not record it "
                                                   "(a PyTorch state_dict, or best.pth away from its run.json)")
    p.add_argument("--image-size", metavar="N", type=_integer(8),
                   help="input side in pixels (default: as the model was trained, else 224)")


def _looks_like_path(text):
    from .predict import looks_like_path

    return looks_like_path(text)
