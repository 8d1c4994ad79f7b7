"""Checkpoint files: ``load`` / ``save`` / ``convert`` for PyTorch .pth (zip and legacy) and safetensors, without torch."""
import os

from ..errors import CheckpointError, ExciteError, InvalidArgumentError, UnsafeCheckpointError
from . import _dtypes, _files
from .pth import read_legacy, read_zip, write_legacy, write_zip
from .safetensors_io import read_safetensors, read_safetensors_metadata, safetensors_bytes, write_safetensors_file

__all__ = ["load", "save", "convert", "load_metadata", "CheckpointError", "UnsafeCheckpointError"]

PTH = "pth"
SAFETENSORS = "safetensors"


def load(f, map_location=None, *, weights_only=True, keep_half=False):
    """Load the object saved in a checkpoint file: a PyTorch .pth (zip or legacy) or a safetensors file.

    The format is recognised from the bytes, not the file name. Tensors come back as
    ``excite.Tensor`` (sharing memory where the file's tensors share a storage); dicts, lists,
    tuples, numbers and strings come back as themselves. Nothing in the file is ever executed:
    anything beyond tensors and plain data raises ``UnsafeCheckpointError``.

    Args:
        f: a path or a binary file object.
        map_location: accepted for torch compatibility; excite tensors always live on the CPU.
        weights_only: must stay True; excite never runs code from a checkpoint.
        keep_half: False (default) loads float16 and bfloat16 tensors as float32 (exactly);
            True keeps float16 as float16 and bfloat16 as ``ml_dtypes.bfloat16``.
    """
    if weights_only is not True:
        raise InvalidArgumentError("excite.load only loads weights (weights_only=True); it never runs code "
                                   "from a checkpoint")
    if map_location not in (None, "cpu") and str(map_location) != "cpu":
        raise InvalidArgumentError(f"excite tensors live on the CPU; map_location must be None or 'cpu', "
                                   f"got {map_location!r}")
    if not isinstance(keep_half, bool):
        raise InvalidArgumentError(f"keep_half must be True or False, got {keep_half!r}")
    return _load(f, _dtypes.HALF_KEEP if keep_half else _dtypes.HALF_AS_FLOAT32)


def _load(f, policy):
    with _files.open_source(f) as (stream, where):
        try:
            kind = _files.sniff_format(stream)
            if kind == _files.ZIP:
                return read_zip(stream, where, policy)
            if kind == _files.SAFETENSORS:
                return read_safetensors(stream.read(), where, policy)
            if kind == _files.TAR:
                raise CheckpointError(f"{where} uses the tar checkpoint format of PyTorch < 0.4, which "
                                      f"excite does not read; re-save it with a recent torch.save")
            return read_legacy(stream, where, policy)
        except ExciteError:
            raise
        except MemoryError:
            raise CheckpointError(f"{where} needs more memory than this process can allocate (at byte "
                                  f"{stream.tell()} of the file)") from None
        except Exception as e:  # the checks above name known problems; this names the rest
            raise CheckpointError(f"{where} is malformed ({type(e).__name__}: {e})") from e


def load_metadata(f):
    """The string key/values stored with a safetensors file (its ``__metadata__``); {} for any other format."""
    with _files.open_source(f) as (stream, where):
        if _files.sniff_format(stream) != _files.SAFETENSORS:
            return {}
        head = stream.read(8)
        size = int.from_bytes(head, "little") if len(head) == 8 else 0
        # only the JSON header, never the tensors (the safetensors format caps a header at 100 MB)
        return read_safetensors_metadata(head + stream.read(min(size, 100 * 2**20)), where)


def save(obj, f, *, format=None, metadata=None, _use_new_zipfile_serialization=True):  # noqa: A002
    """Save ``obj`` so that ``torch.load(f, weights_only=True)`` (or safetensors) reads it back exactly.

    ``f`` ending in ``.safetensors`` (or ``format="safetensors"``) writes safetensors, which holds
    a flat dict of name -> tensor; anything else writes PyTorch's zip format (or its legacy
    format with ``_use_new_zipfile_serialization=False``), which holds tensors, dicts, lists,
    tuples, sets, numbers, strings, bytes and None. Saving to a path is atomic: the file is
    written next to its destination and renamed into place, so an interrupted save never leaves
    a truncated file where a good one was. ``metadata`` (a dict of str -> str) goes into a safetensors
    file's header, as the ``safetensors`` package writes it; the .pth formats have no place for it.
    """
    kind = _save_format(f, format)
    if metadata is not None and kind != SAFETENSORS:
        raise InvalidArgumentError("metadata= is stored only in safetensors files; a .pth keeps it in the object saved")
    if isinstance(f, (str, bytes, os.PathLike)):
        with _files.atomic_write(f) as temporary:
            if kind == SAFETENSORS:
                write_safetensors_file(obj, temporary, metadata)
                return
            with open(temporary, "wb") as stream:
                _write_pth(obj, stream, _archive_name(os.fsdecode(f)), _use_new_zipfile_serialization)
        return
    if not hasattr(f, "write"):
        raise InvalidArgumentError(f"expected a path or a binary file object, got {type(f).__name__}")
    if kind == SAFETENSORS:
        f.write(safetensors_bytes(obj, metadata))
    else:
        _write_pth(obj, f, "archive", _use_new_zipfile_serialization)


def convert(src, dst, *, format=None):  # noqa: A002
    """Convert a checkpoint between .pth and .safetensors (by ``dst``'s suffix), keeping every dtype."""
    obj = _load(src, _dtypes.HALF_BITS)
    if _save_format(dst, format) == SAFETENSORS and isinstance(obj, dict):
        obj = dict(obj)  # a state_dict's `_metadata` has no place in safetensors
    save(obj, dst, format=format)


def _save_format(f, format):  # noqa: A002
    if format is not None:
        if format not in (PTH, SAFETENSORS):
            raise InvalidArgumentError(f"format must be 'pth' or 'safetensors', got {format!r}")
        return format
    name = os.fsdecode(f) if isinstance(f, (str, bytes, os.PathLike)) else getattr(f, "name", "")
    return SAFETENSORS if isinstance(name, str) and name.endswith(".safetensors") else PTH


def _archive_name(path):
    # torch names the zip's top folder after the file, without its extension
    return os.path.splitext(os.path.basename(path))[0] or "archive"


def _write_pth(obj, stream, archive_name, zip_format):
    if zip_format:
        write_zip(obj, stream, archive_name)
    else:
        write_legacy(obj, stream)
