"""Running `excite train` on several MPI ranks: finding mpiexec, `--nproc N`, and a failing rank ending the job."""
import os
import shutil
import subprocess
import sys
import traceback

from ..errors import ExciteError


def find_mpiexec():
    """The ``mpiexec`` beside this Python (the ``mpich`` wheel installs it into the venv), else on PATH; or None."""
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if os.path.isfile(beside) and os.access(beside, os.X_OK):
        return beside
    return shutil.which("mpiexec")


def relaunch(nproc, argv):
    """Run ``excite *argv`` (without --nproc) on ``nproc`` ranks under mpiexec; its exit code."""
    from ..distributed import INSTALL_HINT

    mpiexec = find_mpiexec()
    if mpiexec is None:
        raise ExciteError(f"--nproc needs mpiexec, found neither beside {sys.executable} nor on PATH: "
                          f"{INSTALL_HINT} (installs MPICH's mpiexec into the environment)")
    command = [mpiexec, "-n", str(nproc), sys.executable, "-m", "excite", *argv]
    if "--distributed" not in argv:
        command.append("--distributed")
    try:
        return subprocess.call(command)
    except KeyboardInterrupt:  # mpiexec forwards the Ctrl-C to the ranks, which save and stop
        return 130


def world_size():
    """The number of ranks if excite.distributed was initialised, else 1 (without importing MPI)."""
    from .. import distributed

    return distributed.world_size() if distributed.is_initialized() else 1


def run_ranked(job, guarded):
    """Run ``guarded(job)`` (which turns known errors into one line and an exit code); in a world of several
    ranks a failure on this rank aborts every rank, so the others never wait forever for it."""
    try:
        code = guarded(job)
    except SystemExit as e:
        code = e.code if isinstance(e.code, int) else 1
    except BaseException:  # noqa: BLE001  (a bug: its traceback, then the abort)
        if world_size() <= 1:
            raise
        traceback.print_exc()
        code = 1
    # (an interrupted run stops on every rank at the same batch: nothing to abort)
    if code and code != 130 and world_size() > 1:
        sys.stdout.flush()
        sys.stderr.flush()
        from .. import distributed

        distributed.abort(code)
    return code
