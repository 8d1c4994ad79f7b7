"""Transforms against torchvision.transforms on the same PIL images (within 1/255 after ToTensor)."""
import math

import numpy as np
import pytest
from PIL import Image

import excite as ex
from excite.errors import InvalidArgumentError
from excite.vision import transforms as T
from excite.vision.transforms import functional as F

ONE_LEVEL = 1.0 / 255


def _images():
    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:37, 0:53]
    smooth = np.stack([xx * 4, yy * 6, (xx + yy) * 2], -1) % 256
    noisy = np.clip(smooth + rng.integers(-40, 40, smooth.shape), 0, 255).astype(np.uint8)
    digit = (rng.integers(0, 17, (8, 8)) * 255 // 16).astype(np.uint8)
    return {"rgb-37x53": Image.fromarray(noisy), "gray-53x37": Image.fromarray(noisy[..., 1].T.copy()),
            "digit-8x8": Image.fromarray(digit)}


IMAGES = _images()


def _close(ours, theirs, what, tol=ONE_LEVEL):
    """Compare an excite result with a torchvision one (PIL images go through ToTensor first)."""
    if isinstance(theirs, Image.Image):
        assert isinstance(ours, Image.Image), f"{what}: expected a PIL image, got {type(ours).__name__}"
        assert ours.mode == theirs.mode and ours.size == theirs.size, f"{what}: {ours.mode}{ours.size} vs {theirs.mode}{theirs.size}"
        ours, theirs = F.to_tensor(ours), F.to_tensor(theirs)
        theirs = theirs.numpy()
    else:
        theirs = theirs.numpy()
    ours = ours.numpy()
    assert ours.shape == theirs.shape, f"{what}: shape {ours.shape} vs {theirs.shape}"
    assert ours.dtype == theirs.dtype, f"{what}: dtype {ours.dtype} vs {theirs.dtype}"
    err = float(np.max(np.abs(ours.astype(np.float64) - theirs))) if ours.size else 0.0
    assert err <= tol, f"{what}: max error {err:.3g}"


def _pair(torchvision, name, *args, **kwargs):
    return getattr(T, name)(*args, **kwargs), getattr(torchvision.transforms, name)(*args, **kwargs)


@pytest.mark.parametrize("image", IMAGES)
@pytest.mark.parametrize("size", [32, 20, (16, 24), (64, 40), [9]])
def test_resize_matches_torchvision(torchvision, image, size):
    ours, theirs = _pair(torchvision, "Resize", size)
    _close(ours(IMAGES[image]), theirs(IMAGES[image]), f"Resize({size})")
    assert repr(ours) == repr(theirs)


def test_resize_max_size_and_other_filters(torchvision):
    img = IMAGES["rgb-37x53"]
    ours, theirs = _pair(torchvision, "Resize", 30, max_size=40)
    _close(ours(img), theirs(img), "Resize(30, max_size=40)")
    for mode in ("nearest", "bicubic", "lanczos"):
        ours = T.Resize((20, 30), interpolation=T.InterpolationMode(mode))
        theirs = torchvision.transforms.Resize((20, 30), interpolation=torchvision.transforms.InterpolationMode(mode))
        _close(ours(img), theirs(img), f"Resize {mode}")
        assert repr(ours) == repr(theirs)


@pytest.mark.parametrize("image", IMAGES)
@pytest.mark.parametrize("size", [8, 5, (7, 12), (40, 60), (3, 70), 1])
def test_center_crop_matches_torchvision_including_padding(torchvision, image, size):
    ours, theirs = _pair(torchvision, "CenterCrop", size)
    _close(ours(IMAGES[image]), theirs(IMAGES[image]), f"CenterCrop({size})")
    assert repr(ours) == repr(theirs)


def test_center_crop_and_flip_on_tensors(torchvision, torch):
    chw = F.to_tensor(IMAGES["rgb-37x53"])
    th = torch.tensor(chw.numpy())
    for size in (10, (40, 60), (20, 5)):
        _close(F.center_crop(chw, size), torchvision.transforms.functional.center_crop(th, list(F.setup_size(size))),
               f"center_crop tensor {size}", tol=0)
    _close(F.hflip(chw), torchvision.transforms.functional.hflip(th), "hflip tensor", tol=0)


@pytest.mark.parametrize("image", IMAGES)
def test_to_tensor_matches_torchvision(torchvision, image):
    ours, theirs = T.ToTensor()(IMAGES[image]), torchvision.transforms.ToTensor()(IMAGES[image])
    assert isinstance(ours, ex.Tensor)
    _close(ours, theirs, "ToTensor", tol=0)


def test_to_tensor_on_arrays_and_other_modes(torchvision):
    rng = np.random.default_rng(1)
    for array in (rng.integers(0, 256, (5, 6, 3)).astype(np.uint8), rng.integers(0, 256, (5, 6)).astype(np.uint8),
                  rng.standard_normal((4, 3, 2)).astype(np.float32)):
        _close(F.to_tensor(array), torchvision.transforms.functional.to_tensor(array), f"to_tensor {array.dtype}", 0)
    for img in (IMAGES["gray-53x37"].convert("1"), Image.fromarray(rng.standard_normal((4, 5)).astype(np.float32))):
        _close(F.to_tensor(img), torchvision.transforms.functional.to_tensor(img), f"to_tensor mode {img.mode}", 0)
    _close(F.pil_to_tensor(IMAGES["rgb-37x53"]), torchvision.transforms.functional.pil_to_tensor(IMAGES["rgb-37x53"]),
           "pil_to_tensor", 0)


def test_normalize_matches_torchvision(torchvision, torch):
    x = T.ToTensor()(IMAGES["rgb-37x53"])
    ours, theirs = _pair(torchvision, "Normalize", (0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
    _close(ours(x), theirs(torch.tensor(x.numpy())), "Normalize", tol=1e-6)
    assert repr(ours) == repr(theirs)
    batch = ex.tensor(np.stack([x.numpy()] * 2))
    _close(F.normalize(batch, [0.5] * 3, [0.25] * 3),
           torchvision.transforms.functional.normalize(torch.tensor(batch.numpy()), [0.5] * 3, [0.25] * 3),
           "normalize batch", tol=1e-6)
    with pytest.raises(InvalidArgumentError, match="division by zero"):
        F.normalize(x, [0.5] * 3, [0.0, 1.0, 1.0])


def test_compose_pipeline_matches_torchvision(torchvision):
    steps = lambda t: [t.Resize(32), t.CenterCrop(28), t.Grayscale(3), t.ToTensor(),  # noqa: E731
                       t.Normalize((0.5, 0.4, 0.3), (0.2, 0.3, 0.4))]
    ours, theirs = T.Compose(steps(T)), torchvision.transforms.Compose(steps(torchvision.transforms))
    for name, img in IMAGES.items():
        _close(ours(img), theirs(img), f"pipeline on {name}", tol=ONE_LEVEL / 0.2)
    assert repr(ours) == repr(theirs)


@pytest.mark.parametrize("channels", [1, 3])
def test_grayscale_matches_torchvision(torchvision, channels):
    ours, theirs = _pair(torchvision, "Grayscale", channels)
    _close(ours(IMAGES["rgb-37x53"]), theirs(IMAGES["rgb-37x53"]), f"Grayscale({channels})", tol=0)


def test_random_resized_crop_fallback_and_whole_image_params_equal_torchvision(torchvision):
    theirs = torchvision.transforms.RandomResizedCrop.get_params
    for img, scale, ratio in [(IMAGES["digit-8x8"], (1.0, 1.0), (2.0, 2.0)),      # never fits: central fallback
                              (IMAGES["rgb-37x53"], (1.0, 1.0), (0.5, 0.5)),
                              (IMAGES["gray-53x37"], (1.0, 1.0), (3.0, 4.0)),
                              (IMAGES["digit-8x8"], (1.0, 1.0), (1.0, 1.0))]:     # the whole image
        assert T.RandomResizedCrop.get_params(img, scale, ratio) == theirs(img, scale, list(ratio))


def test_random_resized_crop_params_follow_torchvisions_distribution(torchvision, torch):
    img, scale, ratio = IMAGES["rgb-37x53"], (0.08, 1.0), (3 / 4, 4 / 3)
    torch.manual_seed(0)
    ex.manual_seed(0)
    n = 1500

    def stats(get_params):
        params = np.array([get_params(img, scale, ratio) for _ in range(n)], dtype=np.float64)
        i, j, h, w = params.T
        assert np.all((i >= 0) & (j >= 0) & (i + h <= 37) & (j + w <= 53) & (h > 0) & (w > 0))
        return np.array([np.mean(h * w / (37 * 53)), np.mean(np.log(w / h)), np.mean(i / 37), np.mean(j / 53)])

    ours = stats(T.RandomResizedCrop.get_params)
    theirs = stats(lambda im, s, r: torchvision.transforms.RandomResizedCrop.get_params(im, s, list(r)))
    # means of n draws with standard deviation <= 0.3 each: the two samples agree within 5 standard errors
    tolerance = 5 * 0.3 * math.sqrt(2 / n)
    assert np.all(np.abs(ours - theirs) < tolerance), f"{ours} vs {theirs}"


def test_random_resized_crop_output_and_crop_with_given_params(torchvision):
    img = IMAGES["rgb-37x53"]
    ours, theirs = _pair(torchvision, "RandomResizedCrop", (24, 20), scale=(0.3, 0.9))
    out = ours(img)
    assert out.size == (20, 24) and out.mode == "RGB"
    assert repr(ours) == repr(theirs)
    tvF = torchvision.transforms.functional
    for top, left, h, w in [(3, 5, 20, 30), (0, 0, 37, 53), (10, 40, 7, 13)]:
        _close(F.resized_crop(img, top, left, h, w, [24, 20]), tvF.resized_crop(img, top, left, h, w, [24, 20]),
               f"resized_crop {(top, left, h, w)}")
    ex.manual_seed(5)
    first = np.asarray(ours(img))
    ex.manual_seed(5)
    assert np.array_equal(np.asarray(ours(img)), first), "crops are reproducible under excite.manual_seed"


def test_random_horizontal_flip(torchvision):
    img = IMAGES["rgb-37x53"]
    _close(T.RandomHorizontalFlip(p=1.0)(img), torchvision.transforms.RandomHorizontalFlip(p=1.0)(img), "flip", 0)
    assert T.RandomHorizontalFlip(p=0.0)(img) is img
    flip = T.RandomHorizontalFlip()
    assert repr(flip) == repr(torchvision.transforms.RandomHorizontalFlip())
    flipped = [flip(img) is not img for _ in range(400)]
    assert 0.4 < np.mean(flipped) < 0.6
    _close(T.RandomVerticalFlip(p=1.0)(img), torchvision.transforms.RandomVerticalFlip(p=1.0)(img), "vflip", 0)


def test_geometric_transforms_want_pil_images():
    x = T.ToTensor()(IMAGES["digit-8x8"])
    with pytest.raises(InvalidArgumentError, match="before ToTensor"):
        T.Resize(16)(x)
    with pytest.raises(InvalidArgumentError, match="float tensor"):
        T.Normalize([0.5], [0.5])(F.pil_to_tensor(IMAGES["digit-8x8"]))
    with pytest.raises(InvalidArgumentError, match="interpolation"):
        T.Resize(4, interpolation=12345)
