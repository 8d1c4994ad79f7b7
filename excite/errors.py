"""The exception types excite raises for user mistakes and bad files."""


class ExciteError(Exception):
    """Base class of every error excite raises on purpose."""


class InvalidArgumentError(ExciteError, ValueError):
    """An argument has a value the function cannot accept."""


class ShapeError(ExciteError, ValueError):
    """Tensor shapes are incompatible with an operation."""


class CheckpointError(ExciteError):
    """A checkpoint file is malformed, truncated or unsupported."""


class UnsafeCheckpointError(CheckpointError):
    """A checkpoint asked for something outside the safe allow-list."""


class GradcheckError(ExciteError):
    """Analytic and numerical gradients disagree."""


def shape_str(shape):
    """Format a shape the way error messages show it: [2, 3, 4]."""
    return "[" + ", ".join(str(int(s)) for s in shape) + "]"
