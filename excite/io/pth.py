"""PyTorch checkpoints without torch: the zip format (torch >= 1.6) and the legacy pickle stream, read and written."""
import collections
import hashlib
import io
import os
import pickle
import struct
import zipfile
import zlib

import numpy as np

from ..errors import CheckpointError, UnsafeCheckpointError
from . import _dtypes
from ._pickle import MAX_PICKLE_BYTES, RestrictedUnpickler, describe
from ._files import stream_size
from ._pickler import CheckpointPickler
from ._tensors import LoadContext, Storage, check_plain

MAGIC_NUMBER = 0x1950A86A20F9469CFC6C  # torch.serialization.MAGIC_NUMBER
PROTOCOL_VERSION = 1001                 # torch.serialization.PROTOCOL_VERSION
STORAGE_ALIGNMENT = 64                  # torch.utils.serialization.config.save.storage_alignment
ZIP_FORMAT_VERSION = b"3\n"             # the `version` record torch 2.x writes
_CHUNK = 1 << 24
_MAX_DEFLATE_RATIO = 1032  # deflate cannot expand data by more than this


# ===== reading ==========================================================================
def read_zip(stream, where, policy):
    """Load the object of a torch.save zip archive from a seekable binary stream."""
    archive_size = stream_size(stream)
    try:
        archive = zipfile.ZipFile(stream)
        names = archive.namelist()
    except (zipfile.BadZipFile, zipfile.LargeZipFile, EOFError, OSError, ValueError, NotImplementedError) as e:
        raise CheckpointError(f"{where} is not a readable zip archive: {e or type(e).__name__}") from None
    if not names:
        raise CheckpointError(f"{where} is an empty zip archive, not a PyTorch checkpoint")
    repeated = [name for name, count in collections.Counter(names).items() if count > 1]
    if repeated:
        # zipfile would read the last copy and torch the first: two readers, two answers
        raise CheckpointError(f"{where} holds {len(repeated)} record name(s) more than once (first: "
                              f"{repeated[0]!r}); torch.save writes each record once")
    if "/" not in names[0]:
        raise CheckpointError(f"{where} is a zip archive but not a PyTorch checkpoint: its records are not "
                              f"inside one top folder (first record: {names[0]!r})")
    # torch names the archive's top folder after the file; every record lives under it
    prefix = names[0].split("/", 1)[0] + "/"
    if any(name.rsplit("/", 1)[-1] == "constants.pkl" or "/code/" in name for name in names):
        raise UnsafeCheckpointError(
            f"refused {where}: it is a TorchScript archive (torch.jit.save), which contains code; "
            f"save the model's state_dict() with torch.save instead")

    def record(name, expected_size=None, limit=None):
        try:
            info = archive.getinfo(prefix + name)
        except KeyError:
            raise CheckpointError(f"{where} has no record {prefix + name!r}") from None
        if expected_size is not None and info.file_size != expected_size:
            raise CheckpointError(f"record {prefix + name!r} of {where} holds {info.file_size} bytes, "
                                  f"but its storage needs {expected_size}")
        if limit is not None and info.file_size > limit:
            raise CheckpointError(f"record {prefix + name!r} of {where} is {info.file_size} bytes, "
                                  f"more than the {limit}-byte limit")
        if info.compress_type not in (zipfile.ZIP_STORED, zipfile.ZIP_DEFLATED):
            raise CheckpointError(f"record {prefix + name!r} of {where} uses zip compression method "
                                  f"{info.compress_type}; PyTorch archives are stored or deflated")
        # a header may claim any size: check it against the bytes really there before allocating
        largest = info.compress_size if info.compress_type == zipfile.ZIP_STORED else \
            info.compress_size * _MAX_DEFLATE_RATIO
        if info.compress_size > archive_size or info.file_size > largest:
            raise CheckpointError(f"record {prefix + name!r} of {where} claims {info.file_size} bytes, more "
                                  f"than its {info.compress_size} stored bytes in a {archive_size}-byte file can hold")
        return info

    def read_record(info, into):
        try:
            with archive.open(info) as source:
                _read_exactly(source, _byte_view(into), f"record {info.filename!r} of {where}")
                if source.read(1):
                    raise CheckpointError(f"record {info.filename!r} of {where} is longer than its header says")
        except (zipfile.BadZipFile, zlib.error, EOFError, ValueError, RuntimeError) as e:
            # a bad CRC or local header, a header offset outside the file, a broken deflate stream,
            # an encryption flag (RuntimeError: password required)
            raise CheckpointError(f"record {info.filename!r} of {where} is corrupt: {e or type(e).__name__}") \
                from None

    context = LoadContext(policy, where)
    if prefix + "byteorder" in names:
        info = record("byteorder", limit=16)
        order = bytearray(info.file_size)
        read_record(info, order)
        if order not in (b"little", b"big"):
            raise CheckpointError(f"{where} has byteorder {describe(bytes(order))}; expected 'little' or 'big'")
        context.byteswap = order == b"big"

    def persistent_load(pid):
        element_type, key, numel, _ = context.parse_storage_id(pid, legacy=False)

        def read_storage():
            storage = Storage(key, element_type, numel)
            info = record(f"data/{key}", expected_size=storage.nbytes)
            storage.raw = _allocate(numel, element_type, f"storage {key!r} of {where}")
            read_record(info, storage.raw)
            return storage

        return context.storage(key, element_type, numel, read_storage)

    pickle_info = record("data.pkl", limit=MAX_PICKLE_BYTES)
    data_pkl = _allocate(pickle_info.file_size, None, f"record {prefix}data.pkl of {where}")
    read_record(pickle_info, data_pkl)
    unpickler = RestrictedUnpickler(io.BytesIO(data_pkl), context.allowed_globals(), persistent_load,
                                    f"{prefix}data.pkl of {where}", context.builder)
    result = unpickler.load()
    context.finish()
    return check_plain(result, where)


def read_legacy(stream, where, policy):
    """Load the object of a legacy (``_use_new_zipfile_serialization=False``) torch.save stream."""
    start = stream.tell()
    file_size = stream.seek(0, os.SEEK_END) - start
    stream.seek(start)
    context = LoadContext(policy, where)
    allowed = context.allowed_globals()

    def unpickle(what, persistent_load=None):
        if stream.tell() - start >= file_size:
            raise CheckpointError(f"{where} ends before its {what}")
        return RestrictedUnpickler(stream, allowed, persistent_load, f"the {what} of {where}",
                                   context.builder).load()

    try:
        magic = unpickle("magic number")
    except UnsafeCheckpointError:
        raise
    except CheckpointError as e:
        raise CheckpointError(f"{where} is not a checkpoint: it is neither a PyTorch zip archive, a "
                              f"safetensors file nor a legacy PyTorch pickle ({e})") from None
    if type(magic) is not int or magic != MAGIC_NUMBER:
        raise CheckpointError(f"{where} is a pickle but not a PyTorch checkpoint (magic number {describe(magic)})")
    version = unpickle("protocol version")
    if type(version) is not int or version != PROTOCOL_VERSION:
        raise CheckpointError(f"{where} has legacy protocol version {describe(version)}; expected {PROTOCOL_VERSION}")
    sys_info = unpickle("system info")
    little_endian = sys_info.get("little_endian", True) if type(sys_info) is dict else None
    if type(little_endian) is not bool:
        raise CheckpointError(f"{where} has malformed system info {describe(sys_info)}")
    context.byteswap = not little_endian

    claimed_bytes = [0]
    views = {}

    def persistent_load(pid):
        element_type, key, numel, view = context.parse_storage_id(pid, legacy=True)

        def new_root():
            claimed_bytes[0] += numel * element_type.itemsize
            if claimed_bytes[0] > file_size:  # refuse absurd sizes before allocating anything
                raise CheckpointError(f"storages of {where} claim {claimed_bytes[0]} bytes, more than "
                                      f"the file's {file_size}")
            return Storage(key, element_type, numel)

        root = context.storage(key, element_type, numel, new_root)
        if view is None:
            return root
        if type(view) is not tuple or len(view) != 3 or type(view[0]) is not str \
                or type(view[1]) is not int or type(view[2]) is not int \
                or not (0 <= view[1] and 0 <= view[2] and view[1] + view[2] <= numel):
            raise CheckpointError(f"malformed storage view {describe(view)} of storage {key!r} in {where}")
        view_key, offset, view_numel = view
        if view_key not in views:
            views[view_key] = Storage(view_key, element_type, view_numel, root=root, root_offset=offset)
        return views[view_key]

    result = unpickle("object", persistent_load)
    keys = unpickle("storage key list")
    if type(keys) is not list or not all(type(k) is str for k in keys) or len(set(keys)) != len(keys):
        raise CheckpointError(f"{where} has a malformed storage key list ({describe(keys)})")
    for key in keys:
        if key not in context.storages:
            raise CheckpointError(f"{where} stores data for storage {key!r}, which its pickle never names")
        storage = context.storages[key]
        header = bytearray(8)
        _read_exactly(stream, memoryview(header), f"size of storage {key!r} in {where}")
        (numel,) = struct.unpack("<q", header)
        if numel != storage.numel:
            raise CheckpointError(f"storage {key!r} of {where} holds {numel} elements, but its pickle "
                                  f"says {storage.numel}")
        storage.raw = _allocate(numel, storage.element_type, f"storage {key!r} of {where}")
        _read_exactly(stream, _byte_view(storage.raw), f"storage {key!r} of {where}")
    context.finish()
    return check_plain(result, where)


def _allocate(count, element_type, what):
    """An empty array of ``count`` elements (a bytearray if ``element_type`` is None) for ``what``."""
    try:
        if element_type is None:
            return bytearray(count)
        return np.empty(count, dtype=element_type.numpy_dtype)
    except MemoryError:
        nbytes = count * (1 if element_type is None else element_type.itemsize)
        raise CheckpointError(f"{what} claims {nbytes} bytes, more than this process can allocate") from None


def _byte_view(buffer):
    return memoryview(buffer.view(np.uint8) if isinstance(buffer, np.ndarray) else buffer)


def _read_exactly(source, buffer, what):
    filled, total = 0, len(buffer)
    while filled < total:
        count = source.readinto(buffer[filled:filled + _CHUNK])
        if not count:
            raise CheckpointError(f"{what} is truncated: got {filled} of {total} bytes")
        filled += count


# ===== writing ==========================================================================
def write_zip(obj, stream, archive_name="archive"):
    """Write ``obj`` as torch.save does (zip format) to a seekable binary stream."""
    pickler = CheckpointPickler()
    data_pkl = pickler.dump(obj)
    serialization_id = str(int.from_bytes(hashlib.sha256(data_pkl).digest()[:16], "big")).zfill(40)[:40]
    with zipfile.ZipFile(stream, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as archive:

        def write_record(name, data):
            info = zipfile.ZipInfo(f"{archive_name}/{name}", date_time=(1980, 1, 1, 0, 0, 0))
            info.external_attr = 0o600 << 16
            # pad the local header (as torch's miniz writer does) so record data is 64-byte aligned
            header_end = stream.tell() + 30 + len(info.filename.encode("utf-8")) + 4
            padding = -header_end % STORAGE_ALIGNMENT
            info.extra = b"FB" + struct.pack("<H", padding) + b"Z" * padding
            archive.writestr(info, data)

        write_record("data.pkl", data_pkl)
        write_record(".format_version", b"1")
        write_record(".storage_alignment", str(STORAGE_ALIGNMENT).encode())
        write_record("byteorder", b"little")
        for entry in pickler.storage_order:
            write_record(f"data/{entry.key}", _storage_bytes(entry.array))
        write_record("version", ZIP_FORMAT_VERSION)
        write_record(".data/serialization_id", serialization_id.encode())


def write_legacy(obj, stream):
    """Write ``obj`` as torch.save(..., _use_new_zipfile_serialization=False) does."""
    pickler = CheckpointPickler(legacy=True)
    data_pkl = pickler.dump(obj)
    sys_info = {"protocol_version": PROTOCOL_VERSION, "little_endian": True,
                "type_sizes": {"short": struct.calcsize("h"), "int": struct.calcsize("i"),
                               "long": struct.calcsize("l")}}
    for header in (MAGIC_NUMBER, PROTOCOL_VERSION, sys_info):
        stream.write(pickle.dumps(header, protocol=2))
    stream.write(data_pkl)
    entries = sorted(pickler.storage_order, key=lambda entry: entry.key)  # torch sorts the keys
    stream.write(pickle.dumps([entry.key for entry in entries], protocol=2))
    for entry in entries:
        stream.write(struct.pack("<q", entry.numel))
        stream.write(_storage_bytes(entry.array))


def _storage_bytes(array):
    """The raw little-endian bytes of a storage array, as a flat byte view when possible."""
    return memoryview(_dtypes.little_endian_bytes(array).reshape(-1).view(np.uint8))
