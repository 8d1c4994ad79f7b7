"""The bundled UCI handwritten digits (1,797 8x8 images) with a fixed stratified train/test split."""
import os

import numpy as np
from PIL import Image

from ...data.dataset import Dataset
from ...errors import InvalidArgumentError

DIGITS_FILE = os.path.join(os.path.dirname(__file__), "digits.npz")
TEST_FRACTION = 0.2
SPLIT_SEED = 0


class Digits(Dataset):
    """Optical Recognition of Handwritten Digits: 1,797 gray 8x8 images of the digits 0-9.

    Each image counts, in 4x4 blocks of a 32x32 bitmap, the "on" pixels: values 0..16.
    A sample is ``(image, label)``: the image is a PIL 'L' image of 8x8 pixels scaled to
    0..255 (``round(v * 255 / 16)``), so torchvision-style transforms apply; the label an int.
    ``data`` holds the raw uint8 [N, 8, 8] values 0..16 and ``targets`` the int64 labels.

    ``train=True`` gives 1,437 images, ``train=False`` the other 360, ``train=None`` all
    1,797. The split is fixed and stratified: 20% of each class (largest-remainder rounding to
    360 in all), drawn once with seed 0 and stored with the data, so it never changes.

    The data is the copy scikit-learn ships (the UCI test set, optdigits.tes), stored in
    ``digits.npz``. Licence: CC BY 4.0. Cite as:
    Alpaydin, E. & Kaynak, C. (1998). Optical Recognition of Handwritten Digits [Dataset].
    UCI Machine Learning Repository. https://doi.org/10.24432/C50P49
    """

    classes = [str(d) for d in range(10)]

    def __init__(self, train=True, transform=None, target_transform=None):
        if train not in (True, False, None):
            raise InvalidArgumentError(f"Digits: train must be True, False or None (all), got {train!r}")
        with np.load(DIGITS_FILE) as archive:
            images, labels, test_indices = archive["images"], archive["labels"], archive["test_indices"]
        if train is None:
            keep = np.arange(len(labels))
        else:
            is_test = np.zeros(len(labels), dtype=bool)
            is_test[test_indices] = True
            keep = np.flatnonzero(~is_test if train else is_test)
        self.train = train
        self.data = images[keep]
        self.targets = labels[keep].astype(np.int64)
        self.transform = transform
        self.target_transform = target_transform
        self.class_to_idx = {c: i for i, c in enumerate(self.classes)}

    def __len__(self):
        return len(self.targets)

    def __getitem__(self, index):
        pixels = ((self.data[index].astype(np.uint16) * 255 + 8) // 16).astype(np.uint8)
        img = Image.fromarray(pixels)  # uint8 [8, 8] -> mode "L"
        target = int(self.targets[index])
        if self.transform is not None:
            img = self.transform(img)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return img, target

    def __repr__(self):
        split = {True: "Train", False: "Test", None: "All"}[self.train]
        return f"Dataset Digits\n    Number of datapoints: {len(self)}\n    Split: {split}"


def stratified_test_indices(labels, test_fraction=TEST_FRACTION, seed=SPLIT_SEED):
    """Sorted indices of a test set holding ``test_fraction`` of each class (largest remainder to the total)."""
    labels = np.asarray(labels)
    n_test = int(np.ceil(test_fraction * len(labels)))
    classes, counts = np.unique(labels, return_counts=True)
    exact = counts * n_test / len(labels)
    per_class = np.floor(exact).astype(int)
    for c in np.argsort(-(exact - per_class), kind="stable")[: n_test - per_class.sum()]:
        per_class[c] += 1
    rng = np.random.default_rng(seed)
    chosen = [rng.permutation(np.flatnonzero(labels == c))[:k] for c, k in zip(classes, per_class)]
    return np.sort(np.concatenate(chosen))


def build_digits_file(csv_gz_path, out_path=DIGITS_FILE):
    """Write ``digits.npz`` from scikit-learn's ``sklearn/datasets/data/digits.csv.gz`` (a one-off step:
    64 pixel columns then the label, one row per image)."""
    rows = np.loadtxt(csv_gz_path, delimiter=",", dtype=np.int64)
    images = rows[:, :64].reshape(-1, 8, 8).astype(np.uint8)
    labels = rows[:, 64].astype(np.int64)
    np.savez_compressed(out_path, images=images, labels=labels,
                        test_indices=stratified_test_indices(labels).astype(np.uint16))
