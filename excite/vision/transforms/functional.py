"""Image transform functions on PIL images (and CHW Tensors where cheap), numerically torchvision's."""
import enum
import numbers

import numpy as np
from PIL import Image

from ...errors import InvalidArgumentError
from ...tensor import Tensor


class InterpolationMode(enum.Enum):
    NEAREST = "nearest"
    NEAREST_EXACT = "nearest-exact"
    BILINEAR = "bilinear"
    BICUBIC = "bicubic"
    BOX = "box"
    HAMMING = "hamming"
    LANCZOS = "lanczos"


_PIL_FILTER = {
    InterpolationMode.NEAREST: Image.NEAREST,
    InterpolationMode.BILINEAR: Image.BILINEAR,
    InterpolationMode.BICUBIC: Image.BICUBIC,
    InterpolationMode.BOX: Image.BOX,
    InterpolationMode.HAMMING: Image.HAMMING,
    InterpolationMode.LANCZOS: Image.LANCZOS,
}
_FROM_PIL = {v: k for k, v in _PIL_FILTER.items()}


def as_interpolation(interpolation):
    """An InterpolationMode from itself, its name or a Pillow filter constant."""
    if isinstance(interpolation, InterpolationMode):
        return interpolation
    if isinstance(interpolation, str):
        return InterpolationMode(interpolation)
    if isinstance(interpolation, int) and interpolation in _FROM_PIL:
        return _FROM_PIL[interpolation]
    raise InvalidArgumentError(
        f"interpolation should be an InterpolationMode or a Pillow filter constant, got {interpolation!r}")


def _is_pil(img):
    return isinstance(img, Image.Image)


def _require_pil(img, what):
    if not _is_pil(img):
        raise InvalidArgumentError(
            f"{what} expects a PIL Image (apply it before ToTensor), got {type(img).__name__}")


def _array_of(img):
    if isinstance(img, Tensor):
        return img.data
    if isinstance(img, np.ndarray):
        return img
    raise InvalidArgumentError(f"expected a PIL Image or a [..., C, H, W] Tensor, got {type(img).__name__}")


def get_dimensions(img):
    """``[channels, height, width]`` of a PIL image or a [..., C, H, W] Tensor."""
    if _is_pil(img):
        width, height = img.size
        return [len(img.getbands()), height, width]
    shape = _array_of(img).shape
    return [1 if len(shape) == 2 else shape[-3], shape[-2], shape[-1]]


def setup_size(size, what="size"):
    """(h, w) from an int or a one- or two-element sequence."""
    if isinstance(size, numbers.Number):
        return int(size), int(size)
    if isinstance(size, (tuple, list)) and len(size) == 1:
        return int(size[0]), int(size[0])
    if isinstance(size, (tuple, list)) and len(size) == 2:
        return int(size[0]), int(size[1])
    raise InvalidArgumentError(f"{what} should be an int or a sequence (h, w), got {size!r}")


def resized_output_size(image_size, size, max_size=None):
    """torchvision's output [h, w]: an int (or 1-sequence) matches the shorter edge, keeping aspect."""
    h, w = image_size
    if isinstance(size, int):
        size = [size]
    if len(size) == 2:
        if max_size is not None:
            raise InvalidArgumentError("max_size should only be passed if size specifies the length of the smaller edge")
        return [int(size[0]), int(size[1])]
    short, long = (w, h) if w <= h else (h, w)
    new_short, new_long = int(size[0]), int(int(size[0]) * long / short)
    if max_size is not None:
        if max_size <= new_short:
            raise InvalidArgumentError(
                f"max_size = {max_size} must be strictly greater than the requested size for the smaller edge {size}")
        if new_long > max_size:
            new_short, new_long = int(max_size * new_short / new_long), max_size
    new_w, new_h = (new_short, new_long) if w <= h else (new_long, new_short)
    return [new_h, new_w]


def resize(img, size, interpolation=InterpolationMode.BILINEAR, max_size=None, antialias=True):
    """Resize a PIL image with Pillow's filter (antialiased for bilinear/bicubic, as torchvision's PIL path)."""
    _require_pil(img, "resize")
    interpolation = as_interpolation(interpolation)
    if interpolation not in _PIL_FILTER:
        raise InvalidArgumentError(f"resize on PIL images does not support {interpolation.value} interpolation")
    _, height, width = get_dimensions(img)
    out_h, out_w = resized_output_size((height, width), size, max_size)
    if [height, width] == [out_h, out_w]:
        return img
    return img.resize((out_w, out_h), _PIL_FILTER[interpolation])


def crop(img, top, left, height, width):
    """The ``height`` x ``width`` region at (``top``, ``left``); outside the image is zero."""
    if _is_pil(img):
        return img.crop((left, top, left + width, top + height))
    array = _array_of(img)
    h, w = array.shape[-2:]
    out = np.zeros(array.shape[:-2] + (height, width), dtype=array.dtype)
    src_top, src_left = max(top, 0), max(left, 0)
    src_bottom, src_right = min(top + height, h), min(left + width, w)
    if src_bottom > src_top and src_right > src_left:
        out[..., src_top - top:src_bottom - top, src_left - left:src_right - left] = \
            array[..., src_top:src_bottom, src_left:src_right]
    return Tensor(out)


def center_crop(img, output_size):
    """Crop the center; an image smaller than ``output_size`` is zero-padded first (torchvision's offsets)."""
    crop_height, crop_width = setup_size(output_size, "output_size")
    _, image_height, image_width = get_dimensions(img)
    if crop_width > image_width or crop_height > image_height:
        # torchvision pads (left, top) by half the deficit rounded down, then crops at the rounded centre
        pad_left = (crop_width - image_width) // 2 if crop_width > image_width else 0
        pad_top = (crop_height - image_height) // 2 if crop_height > image_height else 0
        pad_right = (crop_width - image_width + 1) // 2 if crop_width > image_width else 0
        pad_bottom = (crop_height - image_height + 1) // 2 if crop_height > image_height else 0
        padded_h, padded_w = image_height + pad_top + pad_bottom, image_width + pad_left + pad_right
        top = int(round((padded_h - crop_height) / 2.0)) - pad_top
        left = int(round((padded_w - crop_width) / 2.0)) - pad_left
        return crop(img, top, left, crop_height, crop_width)
    top = int(round((image_height - crop_height) / 2.0))
    left = int(round((image_width - crop_width) / 2.0))
    return crop(img, top, left, crop_height, crop_width)


def resized_crop(img, top, left, height, width, size, interpolation=InterpolationMode.BILINEAR, antialias=True):
    img = crop(img, top, left, height, width)
    return resize(img, size, interpolation, antialias=antialias)


def hflip(img):
    """Mirror left-right."""
    if _is_pil(img):
        return img.transpose(Image.FLIP_LEFT_RIGHT)
    return Tensor(np.ascontiguousarray(_array_of(img)[..., ::-1]))


def vflip(img):
    """Mirror top-bottom."""
    if _is_pil(img):
        return img.transpose(Image.FLIP_TOP_BOTTOM)
    return Tensor(np.ascontiguousarray(_array_of(img)[..., ::-1, :]))


def to_grayscale(img, num_output_channels=1):
    """PIL's luma conversion ('L'); with 3 output channels the gray plane is repeated as RGB."""
    _require_pil(img, "to_grayscale")
    gray = img.convert("L")
    if num_output_channels == 1:
        return gray
    if num_output_channels == 3:
        plane = np.array(gray, dtype=np.uint8)
        return Image.fromarray(np.dstack([plane, plane, plane]))  # uint8 [H, W, 3] -> "RGB"
    raise InvalidArgumentError(f"num_output_channels should be either 1 or 3, got {num_output_channels}")


def to_tensor(pic):
    """HWC uint8 PIL image or array -> CHW float32 Tensor in [0, 1]; other dtypes keep their values."""
    if _is_pil(pic):
        mode_dtype = {"I": np.int32, "I;16": np.int16, "F": np.float32}
        array = np.array(pic, mode_dtype.get(pic.mode, np.uint8), copy=True)
        if pic.mode == "1":
            array = 255 * array
        array = array.reshape(pic.size[1], pic.size[0], len(pic.getbands()))
    elif isinstance(pic, np.ndarray):
        if pic.ndim not in (2, 3):
            raise InvalidArgumentError(f"pic should be 2 or 3 dimensional, got {pic.ndim} dimensions")
        array = pic[:, :, None] if pic.ndim == 2 else pic
    else:
        raise InvalidArgumentError(f"pic should be a PIL Image or an ndarray, got {type(pic).__name__}")
    chw = np.ascontiguousarray(array.transpose(2, 0, 1))
    if chw.dtype == np.uint8:
        return Tensor(chw.astype(np.float32) / np.float32(255))
    return Tensor(chw)


def pil_to_tensor(pic):
    """PIL image -> CHW Tensor of the image's own dtype (no scaling)."""
    _require_pil(pic, "pil_to_tensor")
    array = np.array(pic, copy=True)
    if array.ndim == 2:
        array = array[:, :, None]
    return Tensor(np.ascontiguousarray(array.transpose(2, 0, 1)))


def normalize(tensor, mean, std, inplace=False):
    """``(tensor - mean) / std`` per channel of a float [..., C, H, W] Tensor."""
    array = _array_of(tensor)
    if array.dtype.kind != "f":
        raise InvalidArgumentError(f"normalize expects a float tensor, got {array.dtype}; apply ToTensor first")
    if array.ndim < 3:
        raise InvalidArgumentError(
            f"normalize expects a tensor image of shape [..., C, H, W], got shape {list(array.shape)}")
    mean = np.asarray(mean, dtype=array.dtype)
    std = np.asarray(std, dtype=array.dtype)
    if np.any(std == 0):
        raise InvalidArgumentError(f"std evaluated to zero after conversion to {array.dtype}, leading to division by zero")
    if mean.ndim == 1:
        mean = mean.reshape(-1, 1, 1)
    if std.ndim == 1:
        std = std.reshape(-1, 1, 1)
    if inplace:
        array -= mean
        array /= std
        return tensor if isinstance(tensor, Tensor) else Tensor(array)
    return Tensor((array - mean) / std)
