"""The global random generator behind rand/randn, init and dropout; seeded by manual_seed."""
import threading

import numpy as np

_lock = threading.Lock()
_generator = np.random.default_rng()


def manual_seed(seed):
    """Seed excite's generator (weights init, dropout, rand/randn, shuffling)."""
    global _generator
    with _lock:
        _generator = np.random.default_rng(int(seed))
    return _generator


def generator():
    return _generator


def get_rng_state():
    return _generator.bit_generator.state


def set_rng_state(state):
    _generator.bit_generator.state = state
