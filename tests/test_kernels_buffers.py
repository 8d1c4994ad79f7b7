"""The reused-buffer pool behind large kernel outputs: a block is handed out again only once nothing
refers to it, whatever views of it exist; the pool stays under its limit; threads get distinct blocks."""
import threading

import numpy as np
import pytest

from excite.kernels import buffers

SHAPE = (512, 1024)  # 2 MB of float32: pooled


@pytest.fixture(autouse=True)
def empty_pool():
    buffers.clear()
    yield
    buffers.clear()


def _block(a):
    return id(a.base)


def test_small_arrays_are_plain_numpy_allocations():
    a = buffers.empty((10, 10), np.float32)
    assert a.base is None and a.shape == (10, 10) and a.dtype == np.float32
    assert buffers.pooled_bytes() == 0


def test_a_block_returns_only_when_every_view_of_it_is_gone():
    a = buffers.empty(SHAPE, np.float32)
    block = _block(a)
    views = [a.T, a.reshape(-1), a[::2], a.view(np.int32), np.asarray(a)[1:]]
    assert all(_block(v) == block for v in views)
    del a
    busy = buffers.empty(SHAPE, np.float32)
    assert _block(busy) != block, "a view is alive: the block is in use"
    views.clear()
    again = buffers.empty(SHAPE, np.float32)
    assert _block(again) == block, "nothing refers to the block: it is reused"
    again[...] = 1
    assert not np.shares_memory(again, busy)


def test_values_written_through_one_array_do_not_show_up_in_another():
    arrays = [buffers.empty(SHAPE, np.float32) for _ in range(3)]
    for i, a in enumerate(arrays):
        a.fill(i)
    assert [float(a[0, 0]) for a in arrays] == [0.0, 1.0, 2.0]


def test_shapes_dtypes_and_layouts():
    a = buffers.empty((4, 8, 64, 128), np.float64)
    assert a.shape == (4, 8, 64, 128) and a.dtype == np.float64 and a.flags.c_contiguous
    channels_last = np.empty((4, 64, 128, 8), np.float32).transpose(0, 3, 1, 2)
    b = buffers.empty_like(channels_last)
    assert b.shape == channels_last.shape and b.strides == channels_last.strides
    fortran = np.asfortranarray(np.empty((1024, 512), np.float32))
    assert buffers.empty_like(fortran).strides == fortran.strides
    z = buffers.zeros(SHAPE, np.float32)
    assert not z.any()


def test_the_pool_stays_under_its_limit(monkeypatch):
    monkeypatch.setattr(buffers, "LIMIT_BYTES", 5 << 20)
    held = [buffers.empty(SHAPE, np.float32) for _ in range(4)]  # 8 MB wanted, 5 MB allowed
    assert buffers.pooled_bytes() <= 5 << 20
    assert sum(a.base is not None for a in held) == 2, "past the limit, plain allocations"
    held.clear()
    big = buffers.empty((1024, 1024), np.float32)  # another size: the free blocks make room
    assert big.base is not None and buffers.pooled_bytes() <= 5 << 20


def test_threads_get_distinct_blocks():
    results = []
    barrier = threading.Barrier(8)

    def work():
        barrier.wait()
        for _ in range(50):
            a = buffers.empty(SHAPE, np.float32)
            a.fill(threading.get_ident() % 1000)
            results.append(bool((a == threading.get_ident() % 1000).all()))

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(results) == 400 and all(results)


@pytest.mark.parametrize("shape, dtype", [((1,), np.uint8), ((3, 5), np.float32),
                                          ((7, 9, 11), np.float64), (SHAPE, np.float32)])
def test_aligned_arrays_start_on_a_cache_line(shape, dtype):
    """`aligned_empty` and `aligned` start their data on a 64-byte boundary (the C library's large blocks
    start 16 bytes past one), with the shape, dtype and C order asked for; `aligned` copies the values."""
    for _ in range(4):  # several allocations: each lands somewhere else in the heap
        a = buffers.aligned_empty(shape, dtype)
        assert a.ctypes.data % buffers.ALIGNMENT == 0
        assert a.shape == shape and a.dtype == dtype and a.flags.c_contiguous and a.flags.writeable
    source = np.arange(int(np.prod(shape)), dtype=dtype).reshape(shape)
    copy = buffers.aligned(source.T)
    assert copy.ctypes.data % buffers.ALIGNMENT == 0 and copy.flags.c_contiguous
    np.testing.assert_array_equal(copy, source.T)
