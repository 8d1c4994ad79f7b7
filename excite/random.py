"""The global random generator behind rand/randn, init and dropout; seeded by manual_seed."""
import contextlib
import threading

import numpy as np

_lock = threading.Lock()
_generator = np.random.default_rng()
# a per-thread override, so data-loader threads draw augmentations from their own seeded stream
_thread_local = threading.local()


def manual_seed(seed):
    """Seed excite's generator (weights init, dropout, rand/randn, shuffling)."""
    global _generator
    with _lock:
        _generator = np.random.default_rng(int(seed))
    return _generator


def generator():
    """The generator random ops draw from: this thread's override (see use_generator), else the global one."""
    override = getattr(_thread_local, "generator", None)
    return _generator if override is None else override


@contextlib.contextmanager
def use_generator(gen):
    """Within the block, random ops on this thread draw from ``gen`` instead of the global generator.

    DataLoader uses it so that random transforms give the same batches with or without worker threads.
    """
    previous = getattr(_thread_local, "generator", None)
    _thread_local.generator = gen
    try:
        yield gen
    finally:
        _thread_local.generator = previous


def get_rng_state():
    return _generator.bit_generator.state


def set_rng_state(state):
    _generator.bit_generator.state = state
