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


def write_safetensors_file(obj, path):
    specs, keep_alive = safetensors_specs(obj)
    safetensors.serialize_file(specs, path)
    del keep_alive  # the package reads through raw pointers: the arrays must live until here


def safetensors_bytes(obj):
    specs, keep_alive = safetensors_specs(obj)
    data = bytes(safetensors.serialize(specs))
    del keep_alive
    return data
