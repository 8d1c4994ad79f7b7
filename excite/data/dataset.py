"""Map-style datasets: Dataset, TensorDataset, Subset, ConcatDataset and random_split."""
import bisect
import math

import numpy as np

from ..errors import InvalidArgumentError, ShapeError, shape_str
from ..random import generator as global_generator
from ..tensor import Tensor


class Dataset:
    """A map-style dataset: ``__getitem__(index)`` returns one sample, ``__len__`` their count."""

    def __getitem__(self, index):
        raise NotImplementedError(f"{type(self).__name__} must implement __getitem__")

    def __add__(self, other):
        return ConcatDataset([self, other])


class TensorDataset(Dataset):
    """Samples are the ``index``-th rows of each tensor (Tensors or arrays with equal first dims)."""

    def __init__(self, *tensors):
        if not tensors:
            raise InvalidArgumentError("TensorDataset needs at least one tensor")
        sizes = [len(t) for t in tensors]
        if any(s != sizes[0] for s in sizes):
            raise ShapeError(
                "TensorDataset: all tensors must have the same first dimension, got "
                + ", ".join(shape_str(np.shape(t)) for t in tensors)
            )
        self.tensors = tuple(t if isinstance(t, Tensor) else Tensor(np.asarray(t)) for t in tensors)

    def __getitem__(self, index):
        return tuple(Tensor(t.data[index]) for t in self.tensors)

    def __len__(self):
        return len(self.tensors[0])


class Subset(Dataset):
    """The samples of ``dataset`` at ``indices``, in that order."""

    def __init__(self, dataset, indices):
        self.dataset = dataset
        self.indices = [int(i) for i in indices]

    def __getitem__(self, idx):
        return self.dataset[self.indices[idx]]

    def __len__(self):
        return len(self.indices)


class ConcatDataset(Dataset):
    """Several datasets one after another."""

    def __init__(self, datasets):
        self.datasets = list(datasets)
        if not self.datasets:
            raise InvalidArgumentError("ConcatDataset needs at least one dataset")
        self.cumulative_sizes = np.cumsum([len(d) for d in self.datasets]).tolist()

    def __len__(self):
        return self.cumulative_sizes[-1]

    def __getitem__(self, idx):
        if idx < 0:
            if -idx > len(self):
                raise IndexError(f"index {idx} is out of range for a dataset of length {len(self)}")
            idx = len(self) + idx
        which = bisect.bisect_right(self.cumulative_sizes, idx)
        if which >= len(self.datasets):
            raise IndexError(f"index {idx} is out of range for a dataset of length {len(self)}")
        offset = idx if which == 0 else idx - self.cumulative_sizes[which - 1]
        return self.datasets[which][offset]


def as_numpy_generator(generator):
    """``None`` (excite's global generator, seeded by ``excite.manual_seed``), an int seed, or a
    ``numpy.random.Generator``."""
    if generator is None:
        return global_generator()
    if isinstance(generator, (int, np.integer)):
        return np.random.default_rng(int(generator))
    if isinstance(generator, np.random.Generator):
        return generator
    raise InvalidArgumentError(
        f"generator must be None, an int seed or a numpy.random.Generator, got {type(generator).__name__}"
    )


def random_split(dataset, lengths, generator=None):
    """Split ``dataset`` into non-overlapping random Subsets of the given ``lengths``.

    ``lengths`` are counts summing to ``len(dataset)``, or fractions summing to 1 (each gets
    ``floor(frac * n)`` and the remainder goes one by one to the first splits, as in torch).
    ``generator``: None (the global generator), an int seed, or a numpy Generator.
    """
    n = len(dataset)
    lengths = list(lengths)
    if math.isclose(sum(lengths), 1) and sum(lengths) <= 1:
        for i, frac in enumerate(lengths):
            if frac < 0 or frac > 1:
                raise InvalidArgumentError(f"fraction at index {i} is not between 0 and 1: {frac}")
        counts = [int(math.floor(n * frac)) for frac in lengths]
        for i in range(n - sum(counts)):
            counts[i % len(counts)] += 1
        lengths = counts
    if any(int(length) != length or length < 0 for length in lengths):
        raise InvalidArgumentError(f"random_split lengths must be non-negative ints or fractions, got {lengths}")
    if sum(lengths) != n:
        raise InvalidArgumentError(
            f"sum of input lengths ({sum(lengths)}) does not equal the length of the dataset ({n})"
        )
    order = as_numpy_generator(generator).permutation(n).tolist()
    subsets, offset = [], 0
    for length in lengths:
        length = int(length)
        subsets.append(Subset(dataset, order[offset:offset + length]))
        offset += length
    return subsets
