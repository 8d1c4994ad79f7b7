"""Run directories of `excite train`: where a new run goes, which run `--resume` continues, cleaning up a failed one."""
import os
import shutil

from ..errors import CheckpointError, InvalidArgumentError

DEFAULT_OUT = os.path.join("runs", "excite")
CHECKPOINT_FORMAT = "excite-train-1"
CHECKPOINT_FILES = ("last.pth", "best.pth")
# what a run writes besides its checkpoints; a folder holding only these (or nothing) has nothing to resume
RECORD_FILES = ("run.json", "metrics.csv", "metrics.json", "curves.png")


def load_run_checkpoint(path):
    """Load an excite training checkpoint (last.pth) and check it is one."""
    from ..io import load

    ckpt = load(path)
    if not (isinstance(ckpt, dict) and ckpt.get("format") == CHECKPOINT_FORMAT):
        raise CheckpointError(f"{path} is not an excite training checkpoint (last.pth written by excite train)")
    return ckpt


def _numbered_dirs(out):
    parent, base = os.path.split(os.path.abspath(out))
    if not os.path.isdir(parent):
        return []
    names = [n for n in os.listdir(parent) if n == base or (n.startswith(base) and n[len(base):].isdigit())]
    return [os.path.join(parent, n) for n in names if os.path.isdir(os.path.join(parent, n))]


def _last_activity(directory):
    """When anything of the run in ``directory`` was last written (its files' newest mtime)."""
    times = [os.path.getmtime(directory)]
    for name in CHECKPOINT_FILES + RECORD_FILES:
        path = os.path.join(directory, name)
        if os.path.isfile(path):
            times.append(os.path.getmtime(path))
    return max(times)


def latest_run(out):
    """The most recently active run directory among ``out``, ``out2``, ``out3``, ... (None if there is none).

    "Most recent" is the run that last wrote anything, even if it stopped before its first checkpoint:
    resuming it then fails with a message naming it, rather than silently continuing an older run.
    """
    candidates = _numbered_dirs(out)
    if not candidates:
        return None
    newest = max(candidates, key=_last_activity)
    if not os.path.isfile(os.path.join(newest, "last.pth")):
        raise InvalidArgumentError(
            f"the latest run, {_shown(newest)}, has no last.pth to resume (it stopped before its first "
            f"checkpoint); start it again, or name the run to continue: --resume DIR/last.pth")
    return newest


def _shown(path):
    rel = os.path.relpath(path)
    return path if rel.startswith("..") else rel


def fresh_run_dir(out):
    """``out`` if it holds no run yet, else the first of ``out2``, ``out3``, ... that does not exist."""
    def holds_run(d):
        return any(os.path.exists(os.path.join(d, name)) for name in CHECKPOINT_FILES)

    if not holds_run(out):
        return out
    n = 2
    while os.path.exists(f"{out}{n}"):
        n += 1
    return f"{out}{n}"


def remove_if_failed(out, created):
    """After a run failed: delete ``out`` if this run created it and saved no checkpoint into it.

    Only the run's own record files are removed with it; a folder holding anything else stays.
    """
    if not created or not os.path.isdir(out):
        return False
    names = os.listdir(out)
    if any(name in CHECKPOINT_FILES for name in names):
        return False
    if any(name not in RECORD_FILES and not name.startswith(".") for name in names):
        return False
    shutil.rmtree(out, ignore_errors=True)
    return True
