"""Index samplers: sequential, seeded random (reproducible per epoch) and batching."""
import numpy as np

from ..errors import InvalidArgumentError
from .dataset import as_numpy_generator


def draw_seed(generator=None):
    """A 63-bit seed drawn from ``generator`` (None: excite's global generator)."""
    return int(as_numpy_generator(generator).integers(0, 2**63 - 1))


class Sampler:
    """Yields dataset indices."""

    def __iter__(self):
        raise NotImplementedError


class SequentialSampler(Sampler):
    def __init__(self, data_source):
        self.data_source = data_source

    def __iter__(self):
        return iter(range(len(self.data_source)))

    def __len__(self):
        return len(self.data_source)


class RandomSampler(Sampler):
    """A random order of the indices that depends only on ``seed`` and the epoch.

    ``seed`` defaults to one drawn at construction from ``generator`` (None: excite's global
    generator, so ``excite.manual_seed`` makes it reproducible). Each ``__iter__`` uses the
    current ``epoch`` and then advances it; ``set_epoch`` picks an epoch explicitly (resume).
    """

    def __init__(self, data_source, replacement=False, num_samples=None, generator=None, *, seed=None):
        self.data_source = data_source
        self.replacement = replacement
        self._num_samples = num_samples
        if num_samples is not None and (not isinstance(num_samples, int) or num_samples <= 0):
            raise InvalidArgumentError(f"num_samples should be a positive integer, got {num_samples!r}")
        self.seed = draw_seed(generator) if seed is None else int(seed)
        self.epoch = 0

    @property
    def num_samples(self):
        return len(self.data_source) if self._num_samples is None else self._num_samples

    def set_epoch(self, epoch):
        self.epoch = int(epoch)

    def __iter__(self):
        rng = np.random.default_rng([self.seed, self.epoch])
        self.epoch += 1
        n = len(self.data_source)
        if self.replacement:
            return iter(rng.integers(0, n, self.num_samples).tolist())
        full, rest = divmod(self.num_samples, n)
        order = [i for _ in range(full) for i in rng.permutation(n).tolist()]
        order += rng.permutation(n)[:rest].tolist()
        return iter(order)

    def __len__(self):
        return self.num_samples


class BatchSampler(Sampler):
    """Group the indices of ``sampler`` into lists of ``batch_size`` (the last shorter unless ``drop_last``)."""

    def __init__(self, sampler, batch_size, drop_last):
        if not isinstance(batch_size, int) or isinstance(batch_size, bool) or batch_size <= 0:
            raise InvalidArgumentError(f"batch_size should be a positive integer, got {batch_size!r}")
        self.sampler = sampler
        self.batch_size = batch_size
        self.drop_last = drop_last

    def set_epoch(self, epoch):
        if hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)

    def __iter__(self):
        batch = []
        for index in self.sampler:
            batch.append(index)
            if len(batch) == self.batch_size:
                yield batch
                batch = []
        if batch and not self.drop_last:
            yield batch

    def __len__(self):
        if self.drop_last:
            return len(self.sampler) // self.batch_size
        return (len(self.sampler) + self.batch_size - 1) // self.batch_size
