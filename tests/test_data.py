"""Datasets, DataLoader and collation: determinism, batching, threads, random_split, torch's collate."""
import collections
import threading
import time

import numpy as np
import pytest

import excite as ex
from excite.data import (ConcatDataset, DataLoader, Dataset, Subset, TensorDataset, default_collate,
                         random_split)
from excite.errors import InvalidArgumentError, ShapeError


class Numbers(Dataset):
    """Sample i is (a float32 [2] array holding i, the label i % 3)."""

    def __init__(self, n=10):
        self.n = n

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        return np.full(2, i, np.float32), i % 3


class Augmented(Numbers):
    """Adds noise from excite's generator, the way random transforms draw; may sleep to reorder threads."""

    def __init__(self, n=24, sleep=False):
        super().__init__(n)
        self.sleep = sleep

    def __getitem__(self, i):
        x, y = super().__getitem__(i)
        if self.sleep:
            time.sleep(0.002 * ((i * 7) % 5))
        return x + ex.random.generator().standard_normal(2).astype(np.float32), y


def _batches(loader):
    return [(x.numpy().copy(), y.numpy().copy()) for x, y in loader]


def _order(loader):
    return [int(v) for x, _ in loader for v in x.numpy()[:, 0]]


def _same(a, b):
    return len(a) == len(b) and all(np.array_equal(x1, x2) and np.array_equal(y1, y2) for (x1, y1), (x2, y2) in zip(a, b))


def test_batches_stack_samples_and_labels_become_int64():
    x, y = next(iter(DataLoader(Numbers(), batch_size=4)))
    assert isinstance(x, ex.Tensor) and x.shape == (4, 2) and x.dtype == np.float32
    assert isinstance(y, ex.Tensor) and y.dtype == np.int64
    assert y.numpy().tolist() == [0, 1, 2, 0]


def test_shuffle_depends_only_on_seed_and_epoch():
    a, b = DataLoader(Numbers(50), 8, shuffle=True, seed=7), DataLoader(Numbers(50), 8, shuffle=True, seed=7)
    epoch0, epoch1 = _order(a), _order(a)
    assert epoch0 == _order(b) and epoch1 == _order(b)
    assert epoch0 != epoch1, "epochs must be shuffled differently"
    assert sorted(epoch0) == list(range(50)) and sorted(epoch1) == list(range(50))
    assert epoch0 != _order(DataLoader(Numbers(50), 8, shuffle=True, seed=8))
    a.set_epoch(1)  # resume: replay epoch 1 exactly
    assert _order(a) == epoch1


def test_manual_seed_makes_default_shuffles_reproducible():
    ex.manual_seed(3)
    first = _order(DataLoader(Numbers(40), 5, shuffle=True))
    ex.manual_seed(3)
    assert _order(DataLoader(Numbers(40), 5, shuffle=True)) == first
    ex.manual_seed(4)
    assert _order(DataLoader(Numbers(40), 5, shuffle=True)) != first
    assert _order(DataLoader(Numbers(40), 5)) == list(range(40))


def test_numpy_generator_seeds_the_loader():
    one = DataLoader(Numbers(30), 4, shuffle=True, generator=np.random.default_rng(5))
    two = DataLoader(Numbers(30), 4, shuffle=True, generator=np.random.default_rng(5))
    assert _order(one) == _order(two)


def test_drop_last_and_len():
    keep = DataLoader(Numbers(10), batch_size=3)
    drop = DataLoader(Numbers(10), batch_size=3, drop_last=True)
    assert [len(y) for _, y in keep] == [3, 3, 3, 1] and len(keep) == 4
    assert [len(y) for _, y in drop] == [3, 3, 3] and len(drop) == 3


def test_augmentations_are_reproducible_and_leave_the_global_generator_alone():
    ex.manual_seed(0)
    state = ex.get_rng_state()
    loader = DataLoader(Augmented(), batch_size=5, shuffle=True, seed=11)
    epoch0 = _batches(loader)
    assert ex.get_rng_state() == state, "loading must not consume the global generator (dropout, init)"
    loader.set_epoch(0)
    assert _same(_batches(loader), epoch0)
    assert not _same(_batches(loader), epoch0), "a new epoch draws new augmentations"


@pytest.mark.parametrize("shuffle", [False, True])
def test_worker_threads_give_identical_batches_in_order(shuffle):
    plain = DataLoader(Augmented(sleep=True), batch_size=3, shuffle=shuffle, seed=2)
    threaded = DataLoader(Augmented(sleep=True), batch_size=3, shuffle=shuffle, seed=2, num_workers=3,
                          prefetch_factor=2)
    for _ in range(2):  # two epochs each
        assert _same(_batches(plain), _batches(threaded))


def test_worker_init_fn_runs_once_per_thread_and_errors_propagate():
    ids, lock = [], threading.Lock()

    def init(worker_id):
        with lock:
            ids.append(worker_id)

    list(DataLoader(Augmented(sleep=True), batch_size=2, num_workers=2, worker_init_fn=init))
    assert sorted(ids) == [0, 1]

    class Broken(Numbers):
        def __getitem__(self, i):
            if i == 7:
                raise KeyError("sample 7 is broken")
            return super().__getitem__(i)

    with pytest.raises(KeyError, match="sample 7"):
        list(DataLoader(Broken(), batch_size=2, num_workers=2))


def test_breaking_out_of_a_threaded_loop_stops_cleanly():
    before = threading.active_count()
    loader = DataLoader(Augmented(n=200), batch_size=2, num_workers=2)
    for i, _ in enumerate(loader):
        if i == 3:
            break
    del _
    import gc
    gc.collect()
    deadline = time.time() + 5
    while threading.active_count() > before and time.time() < deadline:
        time.sleep(0.01)
    assert threading.active_count() <= before


def test_default_collate_matches_torch(torch):
    from torch.utils.data import default_collate as torch_collate
    Point = collections.namedtuple("Point", "x y")
    rng = np.random.default_rng(0)
    batch = [{"image": rng.standard_normal((3, 4, 4)).astype(np.float32),
              "label": i, "weight": 0.5 * i, "flag": i % 2 == 0, "name": f"s{i}",
              "pair": (np.int32(i), ex.tensor(rng.standard_normal(2).astype(np.float32))),
              "point": Point(i, float(i))} for i in range(3)]
    ours = default_collate(batch)
    theirs = torch_collate([{**b, "pair": (b["pair"][0], torch.tensor(b["pair"][1].numpy()))} for b in batch])

    def compare(a, b, where):
        if isinstance(b, torch.Tensor):
            assert isinstance(a, ex.Tensor), where
            assert a.shape == tuple(b.shape), where
            assert str(a.dtype) == str(b.dtype).replace("torch.", ""), f"{where}: {a.dtype} vs {b.dtype}"
            np.testing.assert_array_equal(a.numpy(), b.numpy(), err_msg=where)
        elif isinstance(b, dict):
            assert sorted(a) == sorted(b), where
            for k in b:
                compare(a[k], b[k], f"{where}.{k}")
        elif isinstance(b, tuple) and hasattr(b, "_fields"):
            assert type(a) is type(b), where
            for k in b._fields:
                compare(getattr(a, k), getattr(b, k), f"{where}.{k}")
        elif isinstance(b, list):
            assert isinstance(a, list) and len(a) == len(b), where
            for i, (x, y) in enumerate(zip(a, b)):
                compare(x, y, f"{where}[{i}]")
        else:
            assert a == b, where

    compare(ours, theirs, "batch")


def test_collate_errors_name_the_problem():
    with pytest.raises(ShapeError, match=r"\[3, 4\] and \[3, 5\]"):
        default_collate([np.zeros((3, 4)), np.zeros((3, 5))])
    from PIL import Image
    with pytest.raises(InvalidArgumentError, match="ToTensor"):
        default_collate([Image.new("L", (2, 2))] * 2)
    with pytest.raises(InvalidArgumentError, match="equal size"):
        default_collate([(1, 2), (1,)])


def test_no_batching_and_custom_collate():
    sample = next(iter(DataLoader(Numbers(), batch_size=None)))
    assert isinstance(sample[0], ex.Tensor) and sample[0].shape == (2,) and sample[1] == 0
    assert next(iter(DataLoader(Numbers(), batch_size=2, collate_fn=len))) == 2


def test_argument_conflicts_are_rejected():
    with pytest.raises(InvalidArgumentError, match="mutually exclusive with shuffle"):
        DataLoader(Numbers(), sampler=[0, 1], shuffle=True)
    with pytest.raises(InvalidArgumentError, match="batch_sampler"):
        DataLoader(Numbers(), batch_sampler=[[0, 1]], batch_size=4)
    with pytest.raises(InvalidArgumentError, match="num_workers"):
        DataLoader(Numbers(), num_workers=-1)
    with pytest.raises(InvalidArgumentError, match="batch_size"):
        DataLoader(Numbers(), batch_size=0)
    assert [y.numpy().tolist() for _, y in DataLoader(Numbers(), batch_sampler=[[2, 0], [1]])] == [[2, 0], [1]]


@pytest.mark.parametrize("lengths", [[3, 3, 4], [0.3, 0.3, 0.4], [0.5, 0.5], [0.33, 0.33, 0.34], [1.0]])
def test_random_split_sizes_match_torch_and_parts_are_disjoint(torch, lengths):
    n = 10 if lengths[0] == 3 else 17
    parts = random_split(Numbers(n), lengths, generator=0)
    expected = [len(p) for p in torch.utils.data.random_split(range(n), lengths)]
    assert [len(p) for p in parts] == expected
    indices = [i for p in parts for i in p.indices]
    assert sorted(indices) == list(range(n)), "parts must be disjoint and cover the dataset"
    assert isinstance(parts[0], Subset) and parts[-1][0][1] == parts[-1].indices[0] % 3


def test_random_split_is_seeded():
    a = random_split(Numbers(30), [10, 20], generator=4)
    b = random_split(Numbers(30), [10, 20], generator=np.random.default_rng(4))
    assert a[0].indices == b[0].indices
    ex.manual_seed(1)
    c = random_split(Numbers(30), [0.5, 0.5])
    ex.manual_seed(1)
    assert random_split(Numbers(30), [0.5, 0.5])[0].indices == c[0].indices
    with pytest.raises(InvalidArgumentError, match="does not equal the length"):
        random_split(Numbers(30), [10, 10])


def test_tensor_subset_and_concat_datasets():
    xs, ys = ex.tensor(np.arange(12, dtype=np.float32).reshape(6, 2)), np.arange(6)
    ds = TensorDataset(xs, ys)
    x, y = ds[4]
    assert x.numpy().tolist() == [8.0, 9.0] and int(y.item()) == 4 and len(ds) == 6
    with pytest.raises(ShapeError, match="same first dimension"):
        TensorDataset(xs, np.arange(5))
    sub = Subset(ds, [5, 0])
    assert len(sub) == 2 and int(sub[0][1].item()) == 5
    both = ds + Numbers(3)
    assert isinstance(both, ConcatDataset) and len(both) == 9 and both[7][1] == 1 and both[-1][1] == 2
    with pytest.raises(IndexError):
        both[9]
