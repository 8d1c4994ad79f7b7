"""excite's per-user directory ($EXCITE_HOME): downloaded checkpoints and compiled kernels live under it."""
import os


def excite_home():
    """$EXCITE_HOME, else $XDG_CACHE_HOME/excite, else ~/.cache/excite (read on every call)."""
    if os.environ.get("EXCITE_HOME"):
        return os.path.expanduser(os.environ["EXCITE_HOME"])
    cache = os.environ.get("XDG_CACHE_HOME") or os.path.join("~", ".cache")
    return os.path.expanduser(os.path.join(cache, "excite"))
