"""How a training run stops early: Ctrl-C as a request to stop at the next safe point; an interrupted or diverged run."""
import signal
import sys
import threading
from contextlib import contextmanager

from ..errors import ExciteError


class TrainingDiverged(ExciteError):
    """The loss became NaN/inf or exploded; the run stopped, keeping the checkpoints of the last good epoch."""


class TrainingInterrupted(Exception):
    """Training stopped on request (Ctrl-C) after saving ``last.pth``; ``--resume`` continues it."""

    def __init__(self, checkpoint, epoch, step, steps):
        self.checkpoint, self.epoch, self.step, self.steps = checkpoint, epoch, step, steps
        where = f"epoch {epoch + 1}, batch {step}/{steps}" if step < steps else f"end of epoch {epoch + 1}"
        super().__init__(f"interrupted at {where}; saved {checkpoint}")


# ----- Ctrl-C ----------------------------------------------------------------------------------
def _compiling():
    compiler = sys.modules.get("excite.kernels.compiler")  # not imported: nothing compiles
    return compiler is not None and compiler.waiting()


class _StopRequest:
    """Turns the first SIGINT into a request to stop at the next safe point (between two batches).

    A second Ctrl-C raises KeyboardInterrupt at once; the checkpoint on disk is then the previous
    one, intact, because every save is atomic.
    """

    def __init__(self):
        self.requested = False
        self._previous = None

    def _handle(self, signum, frame):
        # no output and no imports here: the handler may run in the middle of either
        if self.requested or _compiling():
            raise KeyboardInterrupt  # (while kernels compile: at once, the next safe point may be a minute off)
        self.requested = True

    @contextmanager
    def installed(self):
        main = threading.current_thread() is threading.main_thread()
        if main:
            self._previous = signal.signal(signal.SIGINT, self._handle)
        try:
            yield self
        finally:
            if main:
                signal.signal(signal.SIGINT, self._previous)
