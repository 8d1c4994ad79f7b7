"""safetensors files through the `safetensors` package (its parser, never ours), to and from excite tensors."""
import collections
from collections.abc import Mapping

import numpy as np
import safetensors

from ..errors import CheckpointError, InvalidArgumentError
from ..tensor import Tensor
from . import _dtypes


def read_safetensors(data, where, policy):
    """Parse the bytes of a safetensors file into an OrderedDict of Tensors."""
    try:
        entries = safetensors.deserialize(bytes(data))
    except Exception as e:  # the package raises SafetensorError and, for bad headers, others
        raise CheckpointError(f"{where} is not a valid safetensors file: {e}") from None
    result = collections.OrderedDict()
    for name, entry in entries:
        element_type = _dtypes.BY_SAFETENSORS_NAME.get(entry["dtype"])
        if element_type is None:
            raise CheckpointError(f"tensor {name!r} of {where} has dtype {entry['dtype']}, which excite "
                                  f"does not support")
        shape = tuple(entry["shape"])
        raw = np.frombuffer(entry["data"], dtype=element_type.numpy_dtype).copy()
        if raw.size != int(np.prod(shape, dtype=object)):
            raise CheckpointError(f"tensor {name!r} of {where} has shape {list(shape)} but "
                                  f"{raw.nbytes} bytes of data")
        if element_type.torch_name == "bool":
            raw = raw.view(np.uint8) != 0
        result[name] = Tensor(_dtypes.widen_half(raw, element_type, policy).reshape(shape))
    return result


def safetensors_specs(obj):
    """(TensorSpec dict, arrays to keep alive) for a flat mapping of names to tensors."""
    if not isinstance(obj, Mapping):
        raise InvalidArgumentError(f"safetensors stores a dict of name -> tensor, got {type(obj).__name__}")
    specs, keep_alive = {}, []
    for name, value in obj.items():
        if type(name) is not str:
            raise InvalidArgumentError(f"safetensors tensor names must be strings, got {name!r}")
        array = value.data if isinstance(value, Tensor) else value
        if not isinstance(array, np.ndarray):
            raise InvalidArgumentError(
                f"safetensors holds only tensors, but {name!r} is a {type(value).__name__}; "
                f"save nested checkpoints as .pth")
        element_type = _dtypes.element_type_of(array.dtype)
        if element_type.safetensors_name is None:
            raise InvalidArgumentError(f"safetensors cannot store {name!r} of dtype {element_type.torch_name}")
        array = _dtypes.little_endian_bytes(array)
        keep_alive.append(array)
        specs[name] = safetensors.TensorSpec(dtype=element_type.torch_name, shape=list(array.shape),
                                             data_ptr=array.ctypes.data, data_len=array.nbytes)
    return specs, keep_alive


def check_metadata(metadata):
    """safetensors metadata is a flat dict of str -> str; None stays None."""
    if metadata is None:
        return None
    if not isinstance(metadata, Mapping) or not all(type(k) is str and type(v) is str for k, v in metadata.items()):
        raise InvalidArgumentError(f"safetensors metadata must be a dict of str -> str, got {metadata!r:.200}")
    return dict(metadata)


def write_safetensors_file(obj, path, metadata=None):
    specs, keep_alive = safetensors_specs(obj)
    safetensors.serialize_file(specs, path, metadata=check_metadata(metadata))
    del keep_alive  # the package reads through raw pointers: the arrays must live until here


def safetensors_bytes(obj, metadata=None):
    specs, keep_alive = safetensors_specs(obj)
    data = bytes(safetensors.serialize(specs, metadata=check_metadata(metadata)))
    del keep_alive
    return data


def read_safetensors_metadata(data, where):
    """The ``__metadata__`` dict (str -> str) of a safetensors file's bytes; {} when it has none."""
    import json
    import struct

    try:
        (size,) = struct.unpack("<Q", bytes(data[:8]))
        header = json.loads(bytes(data[8:8 + size]))
        metadata = header.get("__metadata__") or {}
    except (struct.error, ValueError, AttributeError) as e:
        raise CheckpointError(f"{where} is not a valid safetensors file: {e}") from None
    if not isinstance(metadata, dict) or not all(isinstance(v, str) for v in metadata.values()):
        raise CheckpointError(f"{where}: the safetensors metadata is not a dict of strings")
    return dict(metadata)
