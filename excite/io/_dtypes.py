"""The element types checkpoints can hold, and how each maps between torch, safetensors and NumPy."""
import numpy as np

from ..errors import InvalidArgumentError

# NumPy has no bfloat16. Raw bfloat16 bits travel in this tagged 2-byte dtype: the field name
# survives slicing and as_strided, so writers know to label them BFloat16 again.
BFLOAT16_BITS = np.dtype([("bfloat16", "<u2")])


class ElementType:
    """One element type: its torch dtype name, legacy storage class, safetensors tag and NumPy dtype."""

    __slots__ = ("torch_name", "storage_name", "safetensors_name", "numpy_dtype", "itemsize")

    def __init__(self, torch_name, storage_name, safetensors_name, numpy_dtype):
        self.torch_name = torch_name
        self.storage_name = storage_name  # None: torch pickles it through an UntypedStorage
        self.safetensors_name = safetensors_name
        self.numpy_dtype = np.dtype(numpy_dtype)  # little-endian on-disk layout
        self.itemsize = self.numpy_dtype.itemsize

    def __repr__(self):
        return f"torch.{self.torch_name}"


ELEMENT_TYPES = [
    ElementType("float32", "FloatStorage", "F32", "<f4"),
    ElementType("float64", "DoubleStorage", "F64", "<f8"),
    ElementType("float16", "HalfStorage", "F16", "<f2"),
    ElementType("bfloat16", "BFloat16Storage", "BF16", BFLOAT16_BITS),
    ElementType("int64", "LongStorage", "I64", "<i8"),
    ElementType("int32", "IntStorage", "I32", "<i4"),
    ElementType("int16", "ShortStorage", "I16", "<i2"),
    ElementType("int8", "CharStorage", "I8", "i1"),
    ElementType("uint8", "ByteStorage", "U8", "u1"),
    ElementType("bool", "BoolStorage", "BOOL", "?"),
    ElementType("complex64", "ComplexFloatStorage", "C64", "<c8"),
    ElementType("complex128", "ComplexDoubleStorage", None, "<c16"),
    ElementType("uint16", None, "U16", "<u2"),
    ElementType("uint32", None, "U32", "<u4"),
    ElementType("uint64", None, "U64", "<u8"),
]
BY_STORAGE_NAME = {t.storage_name: t for t in ELEMENT_TYPES if t.storage_name}
BY_TORCH_NAME = {t.torch_name: t for t in ELEMENT_TYPES}
BY_SAFETENSORS_NAME = {t.safetensors_name: t for t in ELEMENT_TYPES if t.safetensors_name}
UINT8 = BY_TORCH_NAME["uint8"]
# torch spells some dtypes two ways (torch.half is torch.float16); pickles use the canonical name
TORCH_DTYPE_ALIASES = {"half": "float16", "float": "float32", "double": "float64", "long": "int64",
                       "int": "int32", "short": "int16", "cfloat": "complex64", "cdouble": "complex128"}

HALF_AS_FLOAT32 = "float32"  # widen float16/bfloat16 to float32 (exact)
HALF_KEEP = "keep"           # float16 stays float16, bfloat16 becomes ml_dtypes.bfloat16
HALF_BITS = "bits"           # bfloat16 stays as BFLOAT16_BITS (lossless conversion between formats)


def element_type_of(dtype):
    """The ElementType of a NumPy dtype an excite tensor may hold, or InvalidArgumentError."""
    dtype = np.dtype(dtype)
    if dtype == BFLOAT16_BITS or (dtype.name == "bfloat16" and dtype.itemsize == 2):
        return BY_TORCH_NAME["bfloat16"]
    if dtype.kind == "b":
        return BY_TORCH_NAME["bool"]
    for element_type in ELEMENT_TYPES:
        if element_type.numpy_dtype.kind == dtype.kind and element_type.itemsize == dtype.itemsize \
                and element_type.numpy_dtype.fields is None and dtype.fields is None:
            return element_type
    supported = ", ".join(t.torch_name for t in ELEMENT_TYPES)
    raise InvalidArgumentError(f"cannot save a tensor of dtype {dtype}; supported dtypes: {supported}")


def little_endian_bytes(array):
    """A C-contiguous little-endian copy-or-view of ``array`` whose raw bytes go to disk."""
    if array.dtype.fields is None and array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return np.asarray(array, order="C")  # keeps 0-d arrays 0-d, unlike ascontiguousarray


def widen_half(array, element_type, policy):
    """Apply the half-precision load policy to an array of ``element_type`` read from a file."""
    if element_type.torch_name == "float16":
        return array if policy in (HALF_KEEP, HALF_BITS) else array.astype(np.float32)
    if element_type.torch_name != "bfloat16":
        return array
    bits = array.view(np.uint16) if array.dtype == BFLOAT16_BITS else array
    if policy == HALF_BITS:
        return bits.view(BFLOAT16_BITS)
    if policy == HALF_KEEP:
        return bits.view(_ml_dtypes_bfloat16())
    # bfloat16 is the upper half of a float32: shifting the bits up is exact
    return (bits.astype(np.uint32) << 16).view(np.float32)


def _ml_dtypes_bfloat16():
    try:
        import ml_dtypes
    except ImportError as e:
        raise InvalidArgumentError(
            "keep_half=True found bfloat16 tensors, and NumPy can only hold them through the "
            "ml_dtypes package (pip install ml_dtypes); load with keep_half=False to get float32") from e
    return np.dtype(ml_dtypes.bfloat16)
