"""Shared fixtures. The torch oracle is optional locally and mandatory when EXCITE_REQUIRE_ORACLE=1."""
import os
import sys

import numpy as np
import pytest

# tests of the compiled kernels must run them, not their NumPy twins while builds are on their way
# (tiered execution): the suite waits for builds; tests/test_kernels_tiers.py turns tiers on itself
os.environ.setdefault("EXCITE_KERNEL_TIERS", "0")

import excite as ex  # noqa: E402

try:
    from hypothesis import settings

    # no example database in the tree, no per-example deadline (the machine is shared and noisy)
    settings.register_profile("excite", database=None, deadline=None)
    settings.load_profile("excite")
except ImportError:  # hypothesis is a test extra; only the property tests need it
    pass


def _require(module_name):
    try:
        return __import__(module_name)
    except ImportError:
        if os.environ.get("EXCITE_REQUIRE_ORACLE") == "1":
            pytest.fail(f"{module_name} is required as the test oracle (EXCITE_REQUIRE_ORACLE=1) but is not installed")
        pytest.skip(f"{module_name} not installed; oracle comparison skipped")


@pytest.fixture(scope="session")
def torch():
    t = _require("torch")
    t.set_num_threads(2)
    return t


@pytest.fixture(scope="session")
def torchvision(torch):
    return _require("torchvision")


@pytest.fixture(autouse=True)
def _seed():
    ex.manual_seed(0)
    np.random.seed(0)
    torch = sys.modules.get("torch")
    if torch is not None:
        # the oracle's modules initialise from torch's global generator: the same weights whichever
        # tests ran before (a fixed tolerance on a cancelling sum held for some initialisations only)
        torch.manual_seed(0)
    yield
