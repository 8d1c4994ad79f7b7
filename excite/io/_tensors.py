"""Rebuilding tensors from a PyTorch pickle: the allow-listed globals and their checked rebuild functions."""
import collections
import itertools

import numpy as np

from ..errors import CheckpointError, UnsafeCheckpointError
from ..tensor import Tensor
from . import _dtypes
from ._limits import MAX_NESTING, ContainerBuilder
from ._pickle import SafeCallable, describe

MAX_DIMS = 64           # NumPy's limit
MAX_ELEMENTS = 1 << 48  # a view larger than this (even stride-0) is not a real checkpoint


class StorageType:
    """What GLOBAL pushes for ``torch.FloatStorage`` and friends: a label, never callable."""

    __slots__ = ("element_type",)

    def __init__(self, element_type):
        self.element_type = element_type

    def __repr__(self):
        return f"torch.{self.element_type.storage_name or 'UntypedStorage'}"


class TorchDtype(str):
    """What GLOBAL pushes for ``torch.float32`` and friends: the string "torch.float32", never callable.

    A checkpoint may hold a dtype as a plain value (``{"dtype": torch.float16}``); it loads as its name.
    """

    __slots__ = ("element_type",)

    def __new__(cls, element_type):
        self = super().__new__(cls, f"torch.{element_type.torch_name}")
        self.element_type = element_type
        return self


class Storage:
    """One storage named by a checkpoint: its element type, size, and (once read) its bytes.

    The reader fills ``raw`` (a 1-D little-endian array of ``element_type.numpy_dtype``); legacy
    files name storages in the pickle and store the bytes after it, so reading can come later.
    """

    __slots__ = ("key", "element_type", "numel", "raw", "root", "root_offset", "_converted")

    def __init__(self, key, element_type, numel, root=None, root_offset=0):
        self.key = key
        self.element_type = element_type
        self.numel = numel
        self.raw = None
        self.root = root              # legacy storage views: a slice of another storage
        self.root_offset = root_offset
        self._converted = {}

    @property
    def nbytes(self):
        return self.numel * self.element_type.itemsize

    def typed(self, element_type, policy, byteswap):
        """This storage's elements as ``element_type`` after the half policy (cached per view)."""
        cache_key = (element_type.torch_name, policy)
        if cache_key not in self._converted:
            if self.root is not None:
                root = self.root.typed(self.root.element_type, _dtypes.HALF_BITS, byteswap)
                data, swapped = root[self.root_offset:self.root_offset + self.numel], True
            elif self.raw is None:
                raise CheckpointError(f"storage {self.key!r} is referenced but its data is missing")
            else:
                data, swapped = self.raw, False
            if element_type is not self.element_type:  # _rebuild_tensor_v3 over an UntypedStorage
                data = data.view(np.uint8)
                if data.size % element_type.itemsize:
                    raise CheckpointError(f"storage {self.key!r} holds {data.size} bytes, not a whole "
                                          f"number of {element_type!r} elements")
                data = data.view(element_type.numpy_dtype)
            if byteswap and not swapped and element_type.itemsize > 1:
                # a complex number is two floats, each swapped on its own
                unit = element_type.itemsize // (2 if element_type.numpy_dtype.kind == "c" else 1)
                data = data.view(f"u{unit}").byteswap().view(data.dtype)
            if element_type.torch_name == "bool":
                data = data.view(np.uint8) != 0  # any nonzero byte is True, as in torch
            self._converted[cache_key] = _dtypes.widen_half(data, element_type, policy)
        return self._converted[cache_key]


def _check_int(value, what, low=0, high=None):
    if type(value) is not int:
        raise CheckpointError(f"{what} must be an int, got {describe(value)}")
    if value < low or (high is not None and value > high):
        raise CheckpointError(f"{what} = {value} is out of range [{low}, {high if high is not None else 'inf'}]")
    return value


def _check_shape(values, what):
    if type(values) not in (tuple, list):
        raise CheckpointError(f"tensor {what} must be a tuple of ints, got {describe(values)}")
    if len(values) > MAX_DIMS:
        raise CheckpointError(f"tensor has {len(values)} dimensions; at most {MAX_DIMS} are supported")
    return tuple(_check_int(v, f"tensor {what} entry", 0, MAX_ELEMENTS) for v in values)


class PendingTensor:
    """A tensor whose data is attached by ``LoadContext.finish`` once every storage is read."""

    __slots__ = ("tensor", "storage", "element_type", "offset", "size", "stride")


class LoadContext:
    """State of one load: storages by key, tensors waiting for data, and the half policy."""

    def __init__(self, policy, where):
        self.policy = policy
        self.where = where
        self.storages = {}
        self.pending = []
        self.byteswap = False
        self.builder = ContainerBuilder(where)

    # ----- storages --------------------------------------------------------------------
    def parse_storage_id(self, pid, legacy):
        """Validate a ('storage', type, key, location, numel[, view]) persistent id."""
        expected = 6 if legacy else 5
        if type(pid) is not tuple or not pid or type(pid[0]) is not str or pid[0] != "storage":
            raise UnsafeCheckpointError(
                f"refused persistent id {describe(pid[0] if type(pid) is tuple and pid else pid)} in "
                f"{self.where}: only ('storage', ...) ids are allowed")
        if len(pid) != expected:
            raise CheckpointError(f"storage id in {self.where} has {len(pid)} fields, expected {expected}")
        storage_type, key, location, numel = pid[1:5]
        if type(storage_type) is not StorageType:
            raise CheckpointError(f"storage id names {describe(storage_type)} instead of a storage type")
        if type(key) is not str or not 0 < len(key) <= 256:
            raise CheckpointError(f"storage key must be a short string, got {describe(key)}")
        if type(location) is not str:
            raise CheckpointError(f"storage location must be a string, got {describe(location)}")
        _check_int(numel, f"numel of storage {key!r}", 0, MAX_ELEMENTS)
        return storage_type.element_type, key, numel, (pid[5] if legacy else None)

    def storage(self, key, element_type, numel, make):
        """The storage for ``key``, created by ``make()`` on first use; later uses must agree."""
        if key in self.storages:
            storage = self.storages[key]
            if storage.element_type is not element_type or storage.numel != numel:
                raise CheckpointError(
                    f"storage {key!r} is named twice with different types or sizes "
                    f"({storage.element_type!r}[{storage.numel}] and {element_type!r}[{numel}])")
            return storage
        storage = make()
        self.storages[key] = storage
        return storage

    # ----- tensors ---------------------------------------------------------------------
    def rebuild_tensor(self, storage, offset, size, stride, requires_grad=False, element_type=None):
        if type(storage) is not Storage:
            raise CheckpointError(f"a tensor must be rebuilt from a storage, got {describe(storage)}")
        element_type = element_type or storage.element_type
        offset = _check_int(offset, "storage_offset", 0, MAX_ELEMENTS)
        size = _check_shape(size, "size")
        stride = _check_shape(stride, "stride")
        if len(size) != len(stride):
            raise CheckpointError(f"tensor size {list(size)} and stride {list(stride)} differ in length")
        if type(requires_grad) is not bool:
            raise CheckpointError(f"requires_grad must be a bool, got {describe(requires_grad)}")
        numel = 1
        for s in size:
            numel *= s
        if numel > MAX_ELEMENTS:
            raise CheckpointError(f"tensor of size {list(size)} has more than 2**48 elements")
        capacity = storage.nbytes // element_type.itemsize
        if numel:
            last = offset + sum((s - 1) * st for s, st in zip(size, stride))
            if last >= capacity:
                raise CheckpointError(
                    f"tensor of size {list(size)}, stride {list(stride)} at offset {offset} reaches "
                    f"element {last} of storage {storage.key!r}, which holds {capacity}")
        pending = PendingTensor()
        pending.tensor = Tensor(None, requires_grad=requires_grad and element_type.numpy_dtype.kind in "fcV")
        pending.storage, pending.element_type = storage, element_type
        pending.offset, pending.size, pending.stride = offset, size, stride
        self.pending.append(pending)
        return pending.tensor

    def finish(self):
        """Attach every rebuilt tensor to its storage's data (after the half policy)."""
        for p in self.pending:
            data = p.storage.typed(p.element_type, self.policy, self.byteswap)
            if 0 in p.size:
                p.tensor.data = np.empty(p.size, dtype=data.dtype)
                continue
            itemsize = data.dtype.itemsize
            # a view whose .base is the storage array, so tensors sharing a storage stay shared
            # when saved again; NumPy re-checks that the view stays inside the buffer
            p.tensor.data = np.ndarray(p.size, dtype=data.dtype, buffer=data, offset=p.offset * itemsize,
                                       strides=[s * itemsize for s in p.stride])
        self.pending = []

    # ----- the allow-list ----------------------------------------------------------------
    def allowed_globals(self):
        """(module, name) -> what GLOBAL pushes. Nothing outside this table can be reached."""
        table = {}

        def callable_(module, name, function):
            table[(module, name)] = SafeCallable(f"{module}.{name}", function)

        def rebuild_tensor_v2(storage, storage_offset, size, stride, requires_grad=False,
                              backward_hooks=None, metadata=None):
            _check_metadata(metadata)
            return self.rebuild_tensor(storage, storage_offset, size, stride, requires_grad)

        def rebuild_tensor(storage, storage_offset, size, stride):
            return self.rebuild_tensor(storage, storage_offset, size, stride)

        def rebuild_tensor_v3(storage, storage_offset, size, stride, requires_grad, backward_hooks,
                              dtype, metadata=None):
            _check_metadata(metadata)
            if type(dtype) is not TorchDtype:
                raise CheckpointError(f"_rebuild_tensor_v3 needs a torch dtype, got {describe(dtype)}")
            return self.rebuild_tensor(storage, storage_offset, size, stride, requires_grad,
                                       element_type=dtype.element_type)

        def rebuild_parameter(data, requires_grad, backward_hooks, state=None):
            if type(data) is not Tensor or type(requires_grad) is not bool:
                raise CheckpointError(f"_rebuild_parameter needs a tensor and a bool, got "
                                      f"{describe(data)} and {describe(requires_grad)}")
            data.requires_grad = requires_grad
            return data

        for name, function in [("_rebuild_tensor_v2", rebuild_tensor_v2), ("_rebuild_tensor", rebuild_tensor),
                               ("_rebuild_tensor_v3", rebuild_tensor_v3),
                               ("_rebuild_parameter", rebuild_parameter),
                               ("_rebuild_parameter_with_state", rebuild_parameter)]:
            callable_("torch._utils", name, function)

        def ordered_dict(items=()):
            if type(items) not in (list, tuple):
                raise CheckpointError(f"OrderedDict must be built from a list of pairs, got {describe(items)}")
            for pair in items:
                if type(pair) not in (list, tuple) or len(pair) != 2:
                    raise CheckpointError(f"OrderedDict item must be a (key, value) pair, got {describe(pair)}")
            result = collections.OrderedDict()
            self.builder.set_items(result, items)
            return result

        def set_(items=()):
            _check_container_items("set", items)
            result = set()
            self.builder.add_items(result, items)
            return result

        def frozenset_(items=()):
            _check_container_items("frozenset", items)
            return self.builder.frozenset_of(items)

        callable_("collections", "OrderedDict", ordered_dict)
        callable_("torch", "Size", _torch_size)
        callable_("_codecs", "encode", _codecs_encode)
        for builtins in ("builtins", "__builtin__"):  # protocol 2 writes Python 2's module name
            callable_(builtins, "set", set_)
            callable_(builtins, "frozenset", frozenset_)
            callable_(builtins, "bytearray", _bytearray)
            callable_(builtins, "bytes", _bytes)
            callable_(builtins, "complex", _complex)
        for element_type in _dtypes.ELEMENT_TYPES:
            if element_type.storage_name:
                table[("torch", element_type.storage_name)] = StorageType(element_type)
            table[("torch", element_type.torch_name)] = TorchDtype(element_type)
        for alias, canonical in _dtypes.TORCH_DTYPE_ALIASES.items():
            table[("torch", alias)] = table[("torch", canonical)]
        table[("torch", "UntypedStorage")] = table[("torch.storage", "UntypedStorage")] = StorageType(_dtypes.UINT8)
        return table


def check_plain(result, where):
    """Return ``result`` after refusing what plain data may not hold.

    That is a storage or an allow-listed global outside a tensor, an OrderedDict attribute other
    than a state dict's ``_metadata`` (a table of dicts), and containers nested deeper than
    MAX_NESTING. Nesting is measured here, on the finished object, because a list or dict can be
    filled after it was put inside another; hashing, the one thing that recursed while building,
    only ever saw keys that ``ContainerBuilder`` had bounded.
    """
    if type(result) not in _WALKED:
        return result
    depth = {}                                      # id(container) -> levels of containers, itself included
    path = [[result, _contents(result, where), 0]]  # [container, its unvisited contents, deepest level below]
    on_path = {id(result)}
    while path:
        entry = path[-1]
        for item in entry[1]:
            if type(item) not in _WALKED:
                continue
            if id(item) in depth:
                entry[2] = max(entry[2], depth[id(item)])
            elif id(item) not in on_path:  # an item on the path is a cycle back to a container being walked
                if len(path) >= MAX_NESTING:
                    _refuse_nesting(where)
                path.append([item, _contents(item, where), 0])
                on_path.add(id(item))
                break
        else:
            path.pop()
            on_path.discard(id(entry[0]))
            levels = depth[id(entry[0])] = entry[2] + 1
            if levels > MAX_NESTING:
                _refuse_nesting(where)
            if path:
                path[-1][2] = max(path[-1][2], levels)
    return result


def _refuse_nesting(where):
    raise CheckpointError(f"{where} nests containers more than {MAX_NESTING} levels deep; a checkpoint "
                          f"may nest at most {MAX_NESTING}")


_WALKED = {dict, collections.OrderedDict, list, tuple, set, frozenset, Storage, StorageType, SafeCallable}


def _contents(obj, where):
    """An iterator over what ``obj`` (of a type in _WALKED) holds, attributes included."""
    kind = type(obj)
    if kind in (Storage, StorageType, SafeCallable):
        what = f"storage {obj.key!r}" if kind is Storage else repr(obj)
        raise CheckpointError(f"{where} holds {what} as a value of its own; excite loads "
                              f"storages only as part of tensors")
    if kind is dict:
        return itertools.chain(obj.keys(), obj.values())
    if kind is collections.OrderedDict:
        return itertools.chain(obj.keys(), obj.values(), _state_dict_metadata(obj, where))
    return iter(obj)


def _state_dict_metadata(ordered_dict, where):
    """() or (the _metadata table,) of an OrderedDict, after checking it is what a state dict carries."""
    attributes = vars(ordered_dict)
    if not attributes:
        return ()
    names = sorted(map(str, attributes))
    if names != ["_metadata"]:  # BUILD sets nothing else; this keeps the promise even if that changes
        raise CheckpointError(f"{where} holds an OrderedDict with attributes {', '.join(names)}; a state dict "
                              f"carries only _metadata")
    metadata = attributes["_metadata"]
    if type(metadata) not in (dict, collections.OrderedDict):
        raise CheckpointError(f"{where} holds a state dict whose _metadata is a {describe(metadata)}, not a dict")
    for name, table in metadata.items():
        if type(name) is not str or type(table) not in (dict, collections.OrderedDict):
            raise CheckpointError(f"{where} holds a state dict whose _metadata maps {describe(name)} to "
                                  f"{describe(table)}; it maps module names to dicts")
    return (metadata,)


def _check_metadata(metadata):
    # torch records conjugate/negative-view bits here; all-False (or no) metadata is a plain tensor
    if metadata is None or (type(metadata) in (dict, collections.OrderedDict)
                            and all(value is False for value in metadata.values())):
        return
    raise CheckpointError(f"tensor metadata {describe(metadata)} (conjugate/negative views) is not supported")


def _torch_size(sizes=()):
    if type(sizes) not in (tuple, list) or not all(type(s) is int for s in sizes):
        raise CheckpointError(f"torch.Size must be built from a tuple of ints, got {describe(sizes)}")
    return tuple(sizes)


def _codecs_encode(text, encoding="utf-8"):
    if type(text) is not str or type(encoding) is not str or encoding not in ("latin1", "latin-1", "latin_1"):
        raise CheckpointError(f"_codecs.encode is only allowed for latin1 bytes, got {describe(text)}, "
                              f"{describe(encoding)}")
    try:
        return text.encode("latin1")
    except UnicodeEncodeError:
        raise CheckpointError("_codecs.encode got a string that is not latin1") from None


def _check_container_items(kind, items):
    if type(items) not in (list, tuple, set, frozenset):
        raise CheckpointError(f"{kind} must be built from a list, got {describe(items)}")


def _bytearray(data=b""):
    if type(data) not in (bytes, bytearray):
        raise CheckpointError(f"bytearray must be built from bytes, got {describe(data)}")
    return bytearray(data)


def _bytes(data=b""):
    if type(data) not in (bytes, bytearray):
        raise CheckpointError(f"bytes must be built from bytes, got {describe(data)}")
    return bytes(data)


def _complex(real=0.0, imag=0.0):
    if type(real) not in (int, float) or type(imag) not in (int, float):
        raise CheckpointError(f"complex must be built from two numbers, got {describe(real)}, {describe(imag)}")
    return complex(real, imag)
