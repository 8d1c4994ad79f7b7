"""File plumbing for checkpoints: opening sources, sniffing the format from bytes, and atomic writes."""
import contextlib
import io
import os
import secrets
import struct

from ..errors import InvalidArgumentError

ZIP = "zip"
SAFETENSORS = "safetensors"
LEGACY = "legacy"
TAR = "tar"


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

    The temporary file is created with mode 0o666 so the umask applies as for a plain open().
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    base = os.path.basename(path)
    while True:
        temporary = os.path.join(directory, f".{base}.{secrets.token_hex(6)}.tmp")
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
