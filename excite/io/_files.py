"""File plumbing for checkpoints: opening sources, sniffing the format from bytes, and atomic writes."""
import contextlib
import hashlib
import io
import os
import re
import secrets
import socket
import struct
import time

from ..errors import InvalidArgumentError

ZIP = "zip"
SAFETENSORS = "safetensors"
LEGACY = "legacy"
TAR = "tar"

STALE_SECONDS = 3600  # a temporary whose owner cannot be asked is abandoned once untouched this long
# the middle of ".NAME.<host>-<pid>.<token>.tmp"; before the owner was recorded it was ".NAME.<token>.tmp"
_TEMPORARY_MIDDLE = re.compile(r"(?:([0-9a-f]{8})-([0-9]{1,7})\.)?[0-9a-f]{12}")


@contextlib.contextmanager
def open_source(f):
    """Yield (seekable binary stream, description for messages) for a path or a file object."""
    if isinstance(f, (str, bytes, os.PathLike)):
        with open(f, "rb") as stream:
            yield stream, repr(os.fsdecode(f))
        return
    if not hasattr(f, "read"):
        raise InvalidArgumentError(f"expected a path or a binary file object, got {type(f).__name__}")
    name = getattr(f, "name", None)
    where = repr(name) if isinstance(name, str) else f"<{type(f).__name__}>"
    seekable = getattr(f, "seekable", lambda: False)()
    yield (f if seekable else io.BytesIO(f.read())), where


def sniff_format(stream):
    """ZIP, SAFETENSORS, TAR or LEGACY from the first bytes; the stream position is unchanged."""
    start, size = stream.tell(), stream_size(stream)
    head = stream.read(512)
    stream.seek(start)
    if head[:4] in (b"PK\x03\x04", b"PK\x05\x06"):
        return ZIP
    if len(head) >= 9 and head[8:9] == b"{":
        (header_size,) = struct.unpack("<Q", head[:8])
        if header_size <= size - 8:
            return SAFETENSORS
    if head[257:262] == b"ustar":
        return TAR
    return LEGACY


def stream_size(stream):
    start = stream.tell()
    end = stream.seek(0, os.SEEK_END)
    stream.seek(start)
    return end - start


@contextlib.contextmanager
def atomic_write(path):
    """Yield a temporary path next to ``path``; on success it replaces ``path``, on failure it vanishes.

    The temporary file is created with mode 0o666 so the umask applies as for a plain open(). Its
    name records the writing host and process, so that the next save of ``path`` can remove the
    temporaries of writes that were killed (see ``remove_stale_temporaries``).
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    remove_stale_temporaries(directory, base)
    while True:
        temporary = os.path.join(directory, f".{base}.{_host_tag()}-{os.getpid()}.{secrets.token_hex(6)}.tmp")
        try:
            os.close(os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
            break
        except FileExistsError:
            continue
    try:
        yield temporary
        with open(temporary, "rb+") as written:
            os.fsync(written.fileno())
        os.replace(temporary, path)
    except BaseException:
        with contextlib.suppress(OSError):
            os.unlink(temporary)
        raise


def remove_stale_temporaries(directory, base):
    """Remove the temporaries that killed writes of ``directory/base`` left behind; never a live one.

    A temporary of this host is stale when the process named in it is gone. One of another host
    (a shared file system) or from before names recorded the owner is stale when untouched for
    STALE_SECONDS: a live writer keeps its file's modification time fresh.
    """
    prefix, host, now = f".{base}.", _host_tag(), time.time()
    with contextlib.suppress(OSError), os.scandir(directory) as entries:
        for entry in entries:
            if not (entry.name.startswith(prefix) and entry.name.endswith(".tmp")):
                continue
            owner = _TEMPORARY_MIDDLE.fullmatch(entry.name[len(prefix):-len(".tmp")])
            with contextlib.suppress(OSError):  # gone already, or not ours to remove: leave it
                if owner and entry.is_file(follow_symlinks=False) and _is_stale(entry, owner, host, now):
                    os.unlink(entry.path)


def _is_stale(entry, owner, host, now):
    tag, pid = owner.groups()
    if tag == host and os.name == "posix":
        return not _process_exists(int(pid))
    return now - entry.stat(follow_symlinks=False).st_mtime > STALE_SECONDS


def _process_exists(pid):
    try:
        os.kill(pid, 0)  # signal 0: nothing is sent, only the existence check is made
    except ProcessLookupError:
        return False
    except OSError:  # EPERM: it exists but belongs to someone else; anything else: do not guess
        return True
    return True


def _host_tag():
    return hashlib.sha256(socket.gethostname().encode("utf-8", "surrogateescape")).hexdigest()[:8]
