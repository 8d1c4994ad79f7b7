"""The bundled Digits (against a checksum of the original data) and ImageFolder (against torchvision)."""
import hashlib
import os

import numpy as np
import pytest
from PIL import Image

import excite as ex
from excite.data import DataLoader
from excite.errors import ExciteError, InvalidArgumentError
from excite.vision import transforms as T
from excite.vision.datasets import Digits, ImageFolder

# SHA-256 of the original data, computed once from scikit-learn 1.9.1's sklearn/datasets/data/digits.csv.gz
# (1,797 rows of 64 pixel values then the label) with
#   rows = [[int(v) for v in line.split(",")] for line in gzip.open(path, "rt").read().split()]
#   images: np.uint8 of rows[:, :64] in row order, .tobytes(); labels: '<i8' of rows[:, 64], .tobytes()
# so the bundled digits.npz is checked against the source without scikit-learn installed.
ORIGINAL_IMAGES_SHA256 = "8f26b2bd9d135c256808f68f14fdabddde6d9c7f869ae419704b051f0f14b3b3"
ORIGINAL_LABELS_SHA256 = "a3c91c262eddcf7ba8f0e37507c30284493c9b20412ffe4af30d536401f7ba21"
ORIGINAL_CLASS_COUNTS = [178, 182, 177, 183, 181, 182, 181, 179, 174, 180]  # the UCI description's counts


def test_digits_are_the_original_data():
    every = Digits(train=None)
    assert every.data.shape == (1797, 8, 8) and every.data.dtype == np.uint8 and every.data.max() == 16
    assert hashlib.sha256(np.ascontiguousarray(every.data).tobytes()).hexdigest() == ORIGINAL_IMAGES_SHA256
    assert hashlib.sha256(every.targets.astype("<i8").tobytes()).hexdigest() == ORIGINAL_LABELS_SHA256
    assert np.bincount(every.targets).tolist() == ORIGINAL_CLASS_COUNTS
    assert os.path.getsize(os.path.join(os.path.dirname(ex.vision.datasets.__file__), "digits.npz")) < 100_000


def test_digits_split_is_fixed_stratified_and_disjoint():
    train, test, every = Digits(train=True), Digits(train=False), Digits(train=None)
    assert (len(train), len(test), len(every)) == (1437, 360, 1797)
    test_counts = np.bincount(test.targets, minlength=10)
    expected = 0.2 * np.array(ORIGINAL_CLASS_COUNTS)
    assert np.all(np.abs(test_counts - expected) < 1), f"each class is 20% in test: {test_counts}"
    # the two splits partition the data: as multisets of (image, label) rows they add up to everything
    def rows(d):
        return sorted(zip((image.tobytes() for image in d.data), d.targets.tolist()))
    assert sorted(rows(train) + rows(test)) == rows(every)
    assert np.array_equal(Digits(train=False).targets, test.targets), "the split never changes"


def test_digits_samples_are_pil_images_that_transforms_accept():
    digits = Digits(train=False)
    img, label = digits[0]
    assert isinstance(img, Image.Image) and img.mode == "L" and img.size == (8, 8)
    assert isinstance(label, int) and label == int(digits.targets[0])
    raw = digits.data[0].astype(np.int64)
    assert np.array_equal(np.asarray(img), (raw * 255 + 8) // 16), "0..16 scaled to 0..255"
    loaded = Digits(train=False, transform=T.Compose([T.Resize(32), T.ToTensor()]), target_transform=lambda y: y + 100)
    x, y = loaded[0]
    assert x.shape == (1, 32, 32) and x.dtype == np.float32 and y == label + 100
    xb, yb = next(iter(DataLoader(loaded, batch_size=16, shuffle=True, seed=0)))
    assert xb.shape == (16, 1, 32, 32) and yb.dtype == np.int64
    with pytest.raises(InvalidArgumentError, match="train must be"):
        Digits(train="yes")


def _write(path, color=(10, 200, 30), size=(5, 4)):
    os.makedirs(os.path.dirname(path), exist_ok=True)
    fmt = {".jpg": "JPEG", ".png": "PNG", ".bmp": "BMP"}[os.path.splitext(path)[1].lower()]
    Image.new("RGB", size, color).save(path, fmt)


@pytest.fixture
def image_tree(tmp_path):
    root = tmp_path / "images"
    _write(str(root / "zebra" / "b.png"), (1, 2, 3))
    _write(str(root / "zebra" / "A.PNG"), (4, 5, 6))
    _write(str(root / "cat" / "nested" / "deep.bmp"), (7, 8, 9))
    _write(str(root / "cat" / "x.jpg"))
    _write(str(root / "Dog" / "one.png"), (255, 0, 0), size=(3, 3))
    (root / "cat" / "notes.txt").write_text("not an image")
    (root / "stray.png").write_bytes(b"")  # files at the top level are not classes
    return str(root)


def test_image_folder_matches_torchvision(torchvision, image_tree):
    ours = ImageFolder(image_tree)
    theirs = torchvision.datasets.ImageFolder(image_tree)
    assert ours.classes == theirs.classes == ["Dog", "cat", "zebra"]
    assert ours.class_to_idx == theirs.class_to_idx
    assert ours.samples == theirs.samples and ours.targets == theirs.targets and ours.imgs == theirs.imgs
    for i in range(len(theirs)):
        (a, ya), (b, yb) = ours[i], theirs[i]
        assert ya == yb and a.mode == b.mode == "RGB" and np.array_equal(np.asarray(a), np.asarray(b))


def test_image_folder_transforms_and_custom_validity(image_tree):
    ds = ImageFolder(image_tree, transform=T.Compose([T.Resize((6, 6)), T.ToTensor()]),
                     target_transform=lambda t: -t)
    x, y = ds[0]
    assert x.shape == (3, 6, 6) and y == 0
    only_png = ImageFolder(image_tree, is_valid_file=lambda p: p.endswith(".png"), allow_empty=True)
    assert [os.path.basename(p) for p, _ in only_png.samples] == ["one.png", "b.png"]


def test_image_folder_errors_are_clear(tmp_path, image_tree):
    empty = tmp_path / "empty"
    empty.mkdir()
    with pytest.raises(InvalidArgumentError, match="couldn't find any class folder"):
        ImageFolder(str(empty))
    with pytest.raises(InvalidArgumentError, match="not a directory"):
        ImageFolder(str(tmp_path / "missing"))
    (empty / "birds").mkdir()
    (empty / "birds" / "readme.md").write_text("no images here")
    with pytest.raises(InvalidArgumentError, match="no valid file for the classes birds"):
        ImageFolder(str(empty))
    broken = os.path.join(image_tree, "cat", "broken.png")
    with open(broken, "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n this is not really a png")
    ds = ImageFolder(image_tree)
    index = [p for p, _ in ds.samples].index(broken)
    with pytest.raises(ExciteError, match="broken.png"):
        ds[index]
