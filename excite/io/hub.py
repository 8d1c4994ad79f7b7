"""Downloading checkpoints into a local cache: hash-checked, moved into place atomically, reused afterwards."""
import hashlib
import os
import re
import sys
import urllib.error
import urllib.parse
import urllib.request

from .._home import excite_home
from ..errors import CheckpointError, ExciteError, InvalidArgumentError
from . import _files

HASH_REGEX = re.compile(r"-([a-f0-9]*)\.")  # torch.hub's: the name "model-<sha256 prefix>.pth"
DOWNLOAD_TIMEOUT_SECONDS = 30
_CHUNK = 1 << 20
_hub_dir = None


class DownloadError(ExciteError, OSError):
    """A checkpoint could not be downloaded (no network, server error)."""


def get_dir():
    """The cache root: ``set_dir``'s, else $EXCITE_HOME, else $XDG_CACHE_HOME/excite, else ~/.cache/excite."""
    return _hub_dir if _hub_dir is not None else excite_home()


def set_dir(directory):
    """Use ``directory`` as the cache root for this process (None restores the default)."""
    global _hub_dir
    _hub_dir = None if directory is None else os.path.expanduser(os.fspath(directory))


def checkpoints_dir():
    return os.path.join(get_dir(), "checkpoints")


def expected_hash_prefix(file_name):
    """The sha256 prefix a torchvision-style file name ``name-<prefix>.ext`` carries, or None."""
    match = HASH_REGEX.search(file_name)
    return match.group(1) if match and match.group(1) else None


def download_url_to_file(url, dst, hash_prefix=None, progress=True):
    """Download ``url`` to ``dst`` through a temporary file, checking the sha256 prefix if given.

    Nothing is left at ``dst`` unless the download completed and its hash matched.
    """
    try:
        response = urllib.request.urlopen(url, timeout=DOWNLOAD_TIMEOUT_SECONDS)
    except (urllib.error.URLError, OSError, ValueError) as e:
        reason = f"HTTP {e.code} {e.reason}" if isinstance(e, urllib.error.HTTPError) else getattr(e, "reason", e)
        raise DownloadError(
            f"could not download {url} ({reason}). If this machine has no network access, download the "
            f"file elsewhere and put it at {dst}") from None
    with response, _files.atomic_write(dst) as temporary:
        total = response.headers.get("Content-Length")
        sha256 = hashlib.sha256()
        with open(temporary, "wb") as out, _progress_bar(progress, int(total) if total else None) as bar:
            try:
                while True:
                    chunk = response.read(_CHUNK)
                    if not chunk:
                        break
                    out.write(chunk)
                    sha256.update(chunk)
                    bar.update(len(chunk))
            except OSError as e:
                raise DownloadError(f"download of {url} broke off ({e}); put the file at {dst} by hand "
                                    f"or try again") from None
        digest = sha256.hexdigest()
        if hash_prefix is not None and not digest.startswith(hash_prefix):
            raise CheckpointError(f"invalid hash value for {url}: expected sha256 prefix {hash_prefix}, "
                                  f"got {digest[:len(hash_prefix)]} (full {digest}); the file was discarded")


_verified = {}  # path -> (size, mtime) of cached files whose hash matched, so each is hashed once a process


def _check_cached_hash(path, hash_prefix):
    stat = os.stat(path)
    if _verified.get(path) == (stat.st_size, stat.st_mtime_ns):
        return
    sha256 = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_CHUNK), b""):
            sha256.update(chunk)
    digest = sha256.hexdigest()
    if not digest.startswith(hash_prefix):
        raise CheckpointError(f"{path} in the cache does not match its name: expected sha256 prefix {hash_prefix}, "
                              f"got {digest[:len(hash_prefix)]}; delete it to download it again (or pass "
                              f"check_hash=False to use it anyway)")
    _verified[path] = (stat.st_size, stat.st_mtime_ns)


def cached_download(url, model_dir=None, progress=True, check_hash=True, file_name=None):
    """The local path of ``url``'s file, downloading it into the cache on first use."""
    if not isinstance(url, str) or not url:
        raise InvalidArgumentError(f"url must be a non-empty string, got {url!r}")
    model_dir = os.path.expanduser(os.fspath(model_dir)) if model_dir is not None else checkpoints_dir()
    file_name = file_name or os.path.basename(urllib.parse.urlparse(url).path)
    if not file_name:
        raise InvalidArgumentError(f"cannot tell a file name from {url}; pass file_name=")
    cached_file = os.path.join(model_dir, file_name)
    hash_prefix = expected_hash_prefix(file_name) if check_hash else None
    if os.path.exists(cached_file):
        # a file put there by hand (as the download error suggests) is checked like a download
        if hash_prefix is not None:
            _check_cached_hash(cached_file, hash_prefix)
        return cached_file
    os.makedirs(model_dir, exist_ok=True)
    if progress:
        sys.stderr.write(f'Downloading: "{url}" to {cached_file}\n')
    download_url_to_file(url, cached_file, hash_prefix, progress=progress)
    return cached_file


def load_state_dict_from_url(url, model_dir=None, map_location=None, progress=True, check_hash=True,
                             file_name=None, weights_only=True):
    """Download (once) and load the checkpoint at ``url``, as ``torch.hub.load_state_dict_from_url``.

    The file is cached in ``model_dir`` (default ``<get_dir()>/checkpoints``). With
    ``check_hash`` the sha256 of the download must start with the hex digits after the last
    ``-`` in the file name (torchvision's naming), or the file is discarded.
    """
    from . import load

    cached_file = cached_download(url, model_dir, progress, check_hash, file_name)
    return load(cached_file, map_location=map_location, weights_only=weights_only)


class _NoProgress:
    def update(self, n):
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False


def _progress_bar(progress, total):
    if not progress:
        return _NoProgress()
    from tqdm import tqdm

    return tqdm(total=total, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr)
