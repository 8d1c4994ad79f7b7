"""The data of a training run: the digits or an ImageFolder, their splits, and the batch order of each epoch."""
import dataclasses
import os

import numpy as np

from ..errors import InvalidArgumentError
from ..vision.weights import IMAGENET_MEAN, IMAGENET_STD


@dataclasses.dataclass
class Splits:
    train: object
    val: object
    test: object  # None: the validation split is the only held-out data
    classes: list
    preprocessing: dict  # how `excite predict` must prepare an image for this model (the eval transform)


def _subset(dataset, indices):
    from ..data import Subset

    return Subset(dataset, [int(i) for i in indices])


def _limited(dataset, limit, seed):
    if limit is None or len(dataset) <= limit:
        return dataset
    # a random (not leading) subset, so every class shows up in a small limit
    return _subset(dataset, np.sort(np.random.default_rng([seed, 3]).permutation(len(dataset))[:limit]))


def split_indices(n, val_fraction, seed):
    order = np.random.default_rng([seed, 1]).permutation(n)
    n_val = min(n - 1, max(1, round(n * val_fraction)))
    return np.sort(order[n_val:]), np.sort(order[:n_val])


def default_preprocessing(config):
    """How the data is prepared when no pretrained weights say otherwise (ImageNet's mean/std, bilinear)."""
    size = config.image_size
    grayscale = config.data is None
    return dict(image_size=size, resize_size=[size, size] if grayscale else resize_for(size), grayscale=grayscale,
                mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD), interpolation="bilinear")


def build_splits(config, preprocessing=None, on_skip=None):
    """Datasets for a resolved config: the bundled digits, or an ImageFolder (with train/ and val/ or split).

    ``preprocessing`` (image_size, resize_size, interpolation, mean, std) defaults to
    ``default_preprocessing``; fine-tuning passes the pretrained weights' own. An unreadable image of an
    ImageFolder is skipped (``on_skip(path, reason)`` is told) unless ``config.strict_data``.
    """
    from ..vision import transforms as T

    prep = dict(preprocessing or default_preprocessing(config))
    size = prep["image_size"]
    normalize = T.Normalize(prep["mean"], prep["std"])
    if config.data is None:
        from ..vision.datasets import Digits

        # 8x8 gray digits, scaled up and repeated over 3 channels so every RGB model accepts them
        tf = T.Compose([T.Resize((size, size), interpolation=prep["interpolation"]),
                        T.Grayscale(num_output_channels=3), T.ToTensor(), normalize])
        train_all = Digits(train=True, transform=tf)
        train_idx, val_idx = split_indices(len(train_all), config.val_fraction, config.seed)
        train, val = _subset(train_all, train_idx), _subset(train_all, val_idx)
        test = Digits(train=False, transform=tf)
        classes = list(Digits.classes)
        prep["grayscale"] = True
    else:
        train, val, test, classes = _image_folder_splits(config, T, normalize, prep, on_skip)
        prep["grayscale"] = False
    limit, seed = config.limit, config.seed
    test = None if test is None else _limited(test, limit, seed)
    return Splits(_limited(train, limit, seed), _limited(val, limit, seed), test, classes, prep)


def resize_for(size):
    return int(round(size / 0.875))  # torchvision's 224 -> 256 ratio


class SkipUnreadable:
    """A dataset whose unreadable samples come out as None (and are reported), instead of raising.

    A long run should not die on one corrupt file among thousands; ``collate_or_skip`` drops the Nones.
    """

    def __init__(self, dataset, on_skip):
        self.dataset, self.on_skip = dataset, on_skip

    def __len__(self):
        return len(self.dataset)

    def __getitem__(self, index):
        from ..errors import ExciteError

        try:
            return self.dataset[index]
        except ExciteError as e:  # the ImageFolder loader raises ExciteError naming the file
            path = self.dataset.samples[index][0] if hasattr(self.dataset, "samples") else f"sample {index}"
            self.on_skip(path, str(e))
            return None

    @property
    def classes(self):
        return self.dataset.classes


def _image_folder_splits(config, T, normalize, prep, on_skip):
    from ..vision.datasets import ImageFolder

    root, size, interpolation = config.data, prep["image_size"], prep["interpolation"]
    if not os.path.isdir(root):
        raise InvalidArgumentError(f"--data {root} is not a directory (expected an ImageFolder: one folder per class)")
    train_tf = T.Compose([T.RandomResizedCrop(size, scale=(0.35, 1.0), interpolation=interpolation),
                          T.RandomHorizontalFlip(), T.ToTensor(), normalize])
    eval_tf = T.Compose([T.Resize(prep["resize_size"], interpolation=interpolation), T.CenterCrop(size), T.ToTensor(),
                         normalize])

    def folder(path, transform):
        dataset = ImageFolder(path, transform=transform)
        return dataset if config.strict_data or on_skip is None else SkipUnreadable(dataset, on_skip)

    has = {name: os.path.isdir(os.path.join(root, name)) for name in ("train", "val", "test")}
    if has["train"] and has["val"]:
        train = folder(os.path.join(root, "train"), train_tf)
        val = folder(os.path.join(root, "val"), eval_tf)
        test = folder(os.path.join(root, "test"), eval_tf) if has["test"] else None
        for name, ds in (("val", val), ("test", test)):
            if ds is not None and ds.classes != train.classes:
                raise InvalidArgumentError(
                    f"{root}: {name}/ has classes {ds.classes[:5]}... but train/ has {train.classes[:5]}...; "
                    "the class folders must be the same")
        classes = train.classes
    else:
        train_all = folder(root, train_tf)
        eval_all = folder(root, eval_tf)
        train_idx, val_idx = split_indices(len(train_all), config.val_fraction, config.seed)
        train, val, test, classes = _subset(train_all, train_idx), _subset(eval_all, val_idx), None, train_all.classes
    if len(classes) < 2:
        raise InvalidArgumentError(f"{root} holds {len(classes)} class folder(s); a classifier needs at least 2")
    return train, val, test, list(classes)


class EpochBatches:
    """The batches of one epoch: a permutation fixed by (seed, epoch), in chunks of ``batch_size``.

    The first ``skip`` batches come out empty, so a resumed epoch keeps every batch's number (and
    with it the DataLoader's per-batch augmentation seed) without loading what was already trained.
    In a distributed run of ``world`` ranks a step's global batch holds ``batch_size * world`` images
    and rank ``rank`` takes every ``world``-th of them from its ``rank``-th (torch's DistributedSampler
    rule): the global batches are those of one process with a ``world`` times larger batch.
    """

    def __init__(self, n, batch_size, seed, rank=0, world=1):
        self.n, self.batch_size, self.seed = n, batch_size, seed
        self.rank, self.world = rank, world
        self.epoch, self.skip = 0, 0

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __len__(self):
        return max(1, self.n // (self.batch_size * self.world))

    def __iter__(self):
        order = np.random.default_rng([self.seed, 2, self.epoch]).permutation(self.n)
        step = self.batch_size * self.world
        if self.n < step:  # one short batch rather than none
            yield [] if self.skip else order[self.rank::self.world].tolist()
            return
        for b in range(len(self)):
            yield [] if b < self.skip else order[b * step:(b + 1) * step][self.rank::self.world].tolist()


def collate_or_skip(batch):
    """A batch without its unreadable samples (None); None when nothing is left (an empty or resumed-over batch)."""
    from ..data import default_collate

    batch = [sample for sample in batch if sample is not None]
    return None if not batch else default_collate(batch)
