"""Writing the pickle of a PyTorch checkpoint without torch: protocol 2, tensors as _rebuild_tensor_v2 on shared storages."""
import collections
import pickle
import struct

import numpy as np

from ..errors import InvalidArgumentError
from ..tensor import Tensor
from . import _dtypes
from ._tensors import TorchDtype

# pickle opcodes, protocol 2 (what torch.save writes)
_PROTO2, _STOP, _MARK, _TUPLE = b"\x80\x02", b".", b"(", b"t"
_EMPTY_TUPLE, _TUPLE1, _TUPLE2, _TUPLE3 = b")", b"\x85", b"\x86", b"\x87"
_EMPTY_LIST, _APPENDS, _EMPTY_DICT, _SETITEMS = b"]", b"e", b"}", b"u"
_NONE, _TRUE, _FALSE = b"N", b"\x88", b"\x89"
_REDUCE, _BUILD, _BINPERSID, _GLOBAL = b"R", b"b", b"Q", b"c"
_BINPUT, _LONG_BINPUT, _BINGET, _LONG_BINGET = b"q", b"r", b"h", b"j"
_BATCH = 1000  # items per APPENDS/SETITEMS, as pickle does


class StorageEntry:
    """One storage to write: its key, element type and the C-contiguous array holding its bytes."""

    __slots__ = ("key", "element_type", "array")

    def __init__(self, key, element_type, array):
        self.key, self.element_type, self.array = key, element_type, array

    @property
    def numel(self):
        """The element count the pickle records (bytes, for an UntypedStorage)."""
        return self.array.size if self.element_type.storage_name else self.array.nbytes


def _storage_root(array):
    """The largest C-contiguous same-dtype array ``array`` is a view of (itself if none)."""
    root, node = None, array
    while isinstance(node, np.ndarray):
        if node.dtype == array.dtype and node.flags.c_contiguous:
            root = node
        node = node.base
    return root


def _view_of(array, root):
    """(offset, strides) of ``array`` in elements of ``root``, or None if it is not a plain view."""
    itemsize = array.dtype.itemsize
    offset_bytes = array.__array_interface__["data"][0] - root.__array_interface__["data"][0]
    if offset_bytes < 0 or offset_bytes % itemsize:
        return None
    strides, contiguous_stride = [], 1
    for size, stride in reversed(list(zip(array.shape, array.strides))):
        if size == 1:
            stride = contiguous_stride * itemsize  # any stride addresses a size-1 dim; keep it non-negative
        if stride < 0 or stride % itemsize:
            return None
        strides.append(stride // itemsize)
        contiguous_stride *= size
    strides.reverse()
    offset = offset_bytes // itemsize
    last = offset + sum((s - 1) * st for s, st in zip(array.shape, strides))
    if last >= root.size:
        return None
    return offset, tuple(strides)


class CheckpointPickler:
    """Serialises a checkpoint object; storages are collected in ``self.storages`` for the caller to write."""

    def __init__(self, legacy=False):
        self.legacy = legacy
        self.out = bytearray()
        self.memo = {}          # id(object) -> memo index
        self.keep_alive = []    # objects whose ids are in the memo or the storage table
        self.globals = {}       # "module\nname\n" -> memo index
        self.storages = {}      # id(root array) -> StorageEntry
        self.storage_order = []

    def dump(self, obj):
        self.out += _PROTO2
        self.save(obj, "obj")
        self.out += _STOP
        return bytes(self.out)

    # ----- memo ---------------------------------------------------------------------------
    def put(self, key):
        index = len(self.memo) + len(self.globals)
        self.out += _BINPUT + bytes([index]) if index < 256 else _LONG_BINPUT + struct.pack("<I", index)
        return index

    def get(self, index):
        self.out += _BINGET + bytes([index]) if index < 256 else _LONG_BINGET + struct.pack("<I", index)

    def memoize(self, obj):
        self.memo[id(obj)] = self.put(id(obj))
        self.keep_alive.append(obj)

    def save_global(self, module, name):
        key = f"{module}\n{name}\n"
        if key in self.globals:
            self.get(self.globals[key])
            return
        self.out += _GLOBAL + key.encode("ascii")
        self.globals[key] = self.put(key)

    # ----- values -------------------------------------------------------------------------
    def save(self, obj, path):
        if id(obj) in self.memo:
            self.get(self.memo[id(obj)])
            return
        if obj is None:
            self.out += _NONE
        elif obj is True or obj is False:
            self.out += _TRUE if obj else _FALSE
        elif isinstance(obj, np.generic) and obj.dtype.kind in "biuf":
            self.save(obj.item(), path)
        elif type(obj) is int:
            self.save_int(obj)
        elif type(obj) is float:
            self.out += b"G" + struct.pack(">d", obj)
        elif type(obj) is complex:
            self.save_global("__builtin__", "complex")
            self.save(obj.real, path)
            self.save(obj.imag, path)
            self.out += _TUPLE2 + _REDUCE
        elif type(obj) is TorchDtype:  # a dtype loaded from a checkpoint goes back as the torch dtype
            self.save_global("torch", obj.element_type.torch_name)
        elif type(obj) is str:
            encoded = obj.encode("utf-8", "surrogatepass")
            self.out += b"X" + struct.pack("<I", len(encoded)) + encoded
        elif type(obj) is bytes:
            # protocol 2 has no bytes opcode; pickle and torch spell bytes as _codecs.encode(latin1)
            self.save_global("_codecs", "encode")
            self.save(obj.decode("latin1"), path)
            self.save("latin1", path)
            self.out += _TUPLE2 + _REDUCE
        elif isinstance(obj, (Tensor, np.ndarray)):
            self.save_tensor(obj, path)
        elif type(obj) is tuple:
            self.save_tuple(obj, path)
        elif type(obj) is list:
            self.out += _EMPTY_LIST
            self.memoize(obj)
            for start in range(0, len(obj), _BATCH):
                self.out += _MARK
                for i, item in enumerate(obj[start:start + _BATCH], start):
                    self.save(item, f"{path}[{i}]")
                self.out += _APPENDS
        elif isinstance(obj, dict) and type(obj) in (dict, collections.OrderedDict):
            self.save_dict(obj, path)
        elif type(obj) is set:
            self.save_global("__builtin__", "set")
            self.save(list(obj), path)
            self.out += _TUPLE1 + _REDUCE
            self.memoize(obj)
        else:
            raise InvalidArgumentError(
                f"cannot save {path} of type {type(obj).__name__}: a checkpoint holds tensors, arrays, "
                f"dicts, lists, tuples, sets, numbers, strings, bytes and None")

    def save_int(self, value):
        if 0 <= value < 256:
            self.out += b"K" + bytes([value])
        elif 0 <= value < 65536:
            self.out += b"M" + struct.pack("<H", value)
        elif -2**31 <= value < 2**31:
            self.out += b"J" + struct.pack("<i", value)
        else:
            encoded = pickle.encode_long(value)
            if len(encoded) < 256:
                self.out += b"\x8a" + bytes([len(encoded)]) + encoded
            else:
                self.out += b"\x8b" + struct.pack("<i", len(encoded)) + encoded

    def save_tuple(self, obj, path):
        if not obj:
            self.out += _EMPTY_TUPLE
            return
        if len(obj) > 3:
            self.out += _MARK
        for i, item in enumerate(obj):
            self.save(item, f"{path}[{i}]")
        if id(obj) in self.memo:
            raise InvalidArgumentError(f"cannot save {path}: a tuple that contains itself")
        self.out += {1: _TUPLE1, 2: _TUPLE2, 3: _TUPLE3}.get(len(obj), _TUPLE)
        self.memoize(obj)

    def save_dict(self, obj, path):
        if type(obj) is collections.OrderedDict:
            self.save_global("collections", "OrderedDict")
            self.out += _EMPTY_TUPLE + _REDUCE
        else:
            self.out += _EMPTY_DICT
        self.memoize(obj)
        items = list(obj.items())
        for start in range(0, len(items), _BATCH):
            self.out += _MARK
            for key, value in items[start:start + _BATCH]:
                self.save(key, f"{path} key")
                self.save(value, f"{path}[{key!r}]")
            self.out += _SETITEMS
        attributes = getattr(obj, "__dict__", None)
        if type(obj) is collections.OrderedDict and attributes:
            # torch's state_dict carries its version table as the `_metadata` attribute
            self.save(dict(attributes), f"{path}.__dict__")
            self.out += _BUILD

    def save_tensor(self, obj, path):
        requires_grad = bool(getattr(obj, "requires_grad", False))
        array = obj.data if isinstance(obj, Tensor) else obj
        if not isinstance(array, np.ndarray):
            raise InvalidArgumentError(f"cannot save {path}: its tensor data is a {type(array).__name__}")
        element_type = _dtypes.element_type_of(array.dtype)
        storage, offset, strides = self.storage_for(array, element_type)
        untyped = element_type.storage_name is None  # torch pickles these through _rebuild_tensor_v3
        if untyped and self.legacy:
            raise InvalidArgumentError(f"cannot save {path} of dtype {element_type.torch_name} in the legacy "
                                       f"format (torch cannot read it back); use the zip format")
        self.save_global("torch._utils", "_rebuild_tensor_v3" if untyped else "_rebuild_tensor_v2")
        self.out += _MARK + _MARK
        self.save("storage", path)
        self.save_global("torch.storage" if untyped else "torch", "UntypedStorage" if untyped else element_type.storage_name)
        self.save(storage.key, path)
        self.save("cpu", path)
        self.save(storage.numel, path)
        if self.legacy:
            self.out += _NONE  # no storage view
        self.out += _TUPLE + _BINPERSID
        self.save(offset, path)
        self.save(tuple(int(s) for s in array.shape), path)
        self.save(strides, path)
        self.save(requires_grad and element_type.numpy_dtype.kind in "fcV", path)
        self.save_global("collections", "OrderedDict")  # backward hooks: always empty
        self.out += _EMPTY_TUPLE + _REDUCE
        if untyped:
            self.save_global("torch", element_type.torch_name)
        self.out += _TUPLE + _REDUCE
        self.memoize(obj)

    def storage_for(self, array, element_type):
        """The StorageEntry holding ``array``'s elements, and the view's (offset, strides) in it."""
        root = _storage_root(array) if array.size else None
        view = _view_of(array, root) if root is not None else None
        if view is None:  # not a plain view of a contiguous array: its own contiguous copy
            root = np.ascontiguousarray(array).reshape(-1)
            view = (0, _contiguous_strides(array.shape))
        if id(root) not in self.storages:
            entry = StorageEntry(str(len(self.storages)), element_type, root)
            self.storages[id(root)] = entry
            self.storage_order.append(entry)
            self.keep_alive.append(root)
        return self.storages[id(root)], view[0], view[1]


def _contiguous_strides(shape):
    strides, running = [], 1
    for size in reversed(shape):
        strides.append(running)
        running *= max(size, 1)
    return tuple(reversed(strides))
