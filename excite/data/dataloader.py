"""DataLoader: batches from a dataset, seeded shuffling, optional worker threads, default_collate."""
import collections
import concurrent.futures
import itertools
import numbers
import threading

import numpy as np

from ..errors import ExciteError, InvalidArgumentError, ShapeError, shape_str
from ..random import use_generator
from ..tensor import Tensor
from .sampler import BatchSampler, RandomSampler, SequentialSampler, draw_seed


def _stack(arrays, what):
    first = arrays[0].shape
    for a in arrays[1:]:
        if a.shape != first:
            raise ShapeError(
                f"default_collate: {what} in a batch must have one shape, got {shape_str(first)} and "
                f"{shape_str(a.shape)}; resize them to one size (e.g. transforms.Resize) or pass a collate_fn"
            )
    return Tensor(np.stack(arrays))


def default_collate(batch):
    """Merge a list of samples into a batch, as torch's default_collate.

    Tensors and arrays are stacked along a new first axis into a Tensor; Python ints become an
    int64 Tensor, floats float64, bools bool; strings stay a list; dicts, tuples and lists are
    collated field by field (a tuple sample gives a list of batched fields).
    """
    elem = batch[0]
    if isinstance(elem, Tensor):
        return _stack([b.data for b in batch], "tensors")
    if isinstance(elem, np.ndarray):
        if elem.dtype.kind in "OSUV":
            raise InvalidArgumentError(f"default_collate: cannot batch arrays of dtype {elem.dtype}")
        return _stack([np.asarray(b) for b in batch], "arrays")
    if isinstance(elem, np.generic) and not isinstance(elem, (np.str_, np.bytes_)):
        return Tensor(np.array(batch, dtype=elem.dtype))
    if isinstance(elem, bool):
        return Tensor(np.array(batch, dtype=np.bool_))
    if isinstance(elem, numbers.Integral):
        return Tensor(np.array(batch, dtype=np.int64))
    if isinstance(elem, numbers.Real):
        return Tensor(np.array(batch, dtype=np.float64))
    if isinstance(elem, (str, bytes)):
        return list(batch)
    if isinstance(elem, collections.abc.Mapping):
        return {key: default_collate([d[key] for d in batch]) for key in elem}
    if isinstance(elem, tuple) and hasattr(elem, "_fields"):  # namedtuple
        return type(elem)(*(default_collate(list(field)) for field in zip(*batch)))
    if isinstance(elem, collections.abc.Sequence):
        size = len(elem)
        if any(len(b) != size for b in batch):
            raise InvalidArgumentError("default_collate: each element in list of batch should be of equal size")
        return [default_collate(list(field)) for field in zip(*batch)]
    hint = " (convert images with transforms.ToTensor())" if type(elem).__module__.startswith("PIL") else ""
    raise InvalidArgumentError(
        "default_collate: batch must contain Tensors, numpy arrays, numbers, strings, dicts or lists; "
        f"found {type(elem).__module__}.{type(elem).__name__}{hint}"
    )


def default_convert(data):
    """Turn arrays inside a single (unbatched) sample into Tensors, leaving the rest as it is."""
    if isinstance(data, Tensor):
        return data
    if isinstance(data, np.ndarray) and data.dtype.kind not in "OSUV":
        return Tensor(data)
    if isinstance(data, np.generic) and not isinstance(data, (np.str_, np.bytes_)):
        return Tensor(np.asarray(data))
    if isinstance(data, collections.abc.Mapping):
        return {key: default_convert(value) for key, value in data.items()}
    if isinstance(data, tuple) and hasattr(data, "_fields"):
        return type(data)(*(default_convert(d) for d in data))
    if isinstance(data, (tuple, list)):
        return [default_convert(d) for d in data]
    return data


class DataLoader:
    """Iterate over ``dataset`` in batches, as torch.utils.data.DataLoader.

    Shuffling is reproducible: the order of an epoch depends only on ``seed`` and the epoch
    number. ``seed`` defaults to one drawn at construction from ``generator`` (None: excite's
    global generator, so ``excite.manual_seed`` fixes it). Each ``iter()`` is one epoch and
    advances the epoch counter; ``set_epoch(n)`` sets it (to resume a run mid-way).

    Random transforms inside the dataset draw from ``excite.random.generator()``, which during
    loading is a per-batch generator seeded by (seed, epoch, batch index): augmentations are
    reproducible too, and identical with or without workers.

    ``num_workers > 0`` loads batches in that many threads (NumPy and Pillow release the GIL),
    ``prefetch_factor`` batches ahead per thread; batches always come out in order.
    ``pin_memory`` and ``persistent_workers`` are accepted for compatibility and do nothing.
    """

    def __init__(self, dataset, batch_size=1, shuffle=None, sampler=None, batch_sampler=None, num_workers=0,
                 collate_fn=None, pin_memory=False, drop_last=False, timeout=0, worker_init_fn=None,
                 generator=None, *, prefetch_factor=None, persistent_workers=False, seed=None):
        if not isinstance(num_workers, int) or num_workers < 0:
            raise InvalidArgumentError(f"num_workers must be a non-negative int, got {num_workers!r}")
        if timeout < 0:
            raise InvalidArgumentError(f"timeout must be non-negative, got {timeout}")
        if prefetch_factor is not None and num_workers == 0:
            raise InvalidArgumentError("prefetch_factor can only be set with num_workers > 0")
        if batch_sampler is not None:
            if batch_size != 1 or shuffle or sampler is not None or drop_last:
                raise InvalidArgumentError(
                    "batch_sampler option is mutually exclusive with batch_size, shuffle, sampler, and drop_last")
            batch_size, drop_last = None, False
        if sampler is not None and shuffle:
            raise InvalidArgumentError("sampler option is mutually exclusive with shuffle")
        if batch_size is None and drop_last:
            raise InvalidArgumentError("batch_size=None (no batching) is mutually exclusive with drop_last")

        self.dataset = dataset
        self.num_workers = num_workers
        self.prefetch_factor = 2 if prefetch_factor is None else int(prefetch_factor)
        self.pin_memory = pin_memory
        self.timeout = timeout
        self.worker_init_fn = worker_init_fn
        self.persistent_workers = persistent_workers
        self.seed = draw_seed(generator) if seed is None else int(seed)
        if sampler is None:
            sampler = RandomSampler(dataset, seed=self.seed) if shuffle else SequentialSampler(dataset)
        if batch_size is not None and batch_sampler is None:
            batch_sampler = BatchSampler(sampler, batch_size, drop_last)
        self.sampler = sampler
        self.batch_sampler = batch_sampler
        self.batch_size = batch_size
        self.drop_last = drop_last
        if collate_fn is None:
            collate_fn = default_collate if batch_sampler is not None else default_convert
        self.collate_fn = collate_fn
        self.epoch = 0

    def set_epoch(self, epoch):
        """Make the next ``iter()`` produce epoch ``epoch`` (its shuffle and its augmentations)."""
        self.epoch = int(epoch)

    def __len__(self):
        if self.batch_sampler is not None:
            return len(self.batch_sampler)
        return len(self.sampler)

    def __iter__(self):
        epoch = self.epoch
        self.epoch += 1
        indices = self.batch_sampler if self.batch_sampler is not None else self.sampler
        if hasattr(indices, "set_epoch"):
            indices.set_epoch(epoch)
        elif hasattr(self.sampler, "set_epoch"):
            self.sampler.set_epoch(epoch)
        jobs = enumerate(iter(indices))
        if self.num_workers == 0:
            return (self._fetch(epoch, number, index) for number, index in jobs)
        return self._threaded(epoch, jobs)

    def _fetch(self, epoch, batch_number, index):
        with use_generator(np.random.default_rng([self.seed, epoch, batch_number])):
            if self.batch_sampler is not None:
                return self.collate_fn([self.dataset[i] for i in index])
            return self.collate_fn(self.dataset[index])

    def _threaded(self, epoch, jobs):
        worker_ids = itertools.count()
        lock = threading.Lock()

        def init_worker():
            if self.worker_init_fn is not None:
                with lock:
                    worker_id = next(worker_ids)
                self.worker_init_fn(worker_id)

        executor = concurrent.futures.ThreadPoolExecutor(
            self.num_workers, thread_name_prefix="excite-data", initializer=init_worker)
        pending = collections.deque()

        def submit(count):
            for number, index in itertools.islice(jobs, count):
                pending.append(executor.submit(self._fetch, epoch, number, index))

        try:
            submit(self.num_workers * self.prefetch_factor)
            while pending:
                future = pending.popleft()
                try:
                    batch = future.result(timeout=self.timeout or None)
                except concurrent.futures.TimeoutError:
                    raise ExciteError(f"DataLoader timed out after {self.timeout} s waiting for a batch") from None
                submit(1)
                yield batch
        finally:
            executor.shutdown(wait=True, cancel_futures=True)
