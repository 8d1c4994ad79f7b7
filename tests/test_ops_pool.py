"""Oracle tests for adaptive_avg_pool2d, avg_pool2d and max_pool2d."""
import numpy as np
import pytest

import excite.nn.functional as F
from oracle import DTYPES, check_op, distinct, randn


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("in_hw, out", [
    ((6, 8), 1), ((6, 8), (1, 1)), ((6, 8), (3, 4)), ((6, 8), 2),  # divisible
    ((7, 5), 3), ((7, 5), (4, 2)), ((5, 5), (3, 3)), ((10, 7), (3, 5)),  # overlapping windows
    ((3, 3), 5), ((2, 3), (4, 4)),  # output larger than input
    ((7, 5), (None, 3)), ((7, 5), (2, None)), ((1, 1), 1),
], ids=str)
def test_adaptive_avg_pool2d(torch, in_hw, out, dtype):
    x = randn(2, 3, *in_hw)
    check_op(torch, lambda t: F.adaptive_avg_pool2d(t, out),
             lambda t: torch.nn.functional.adaptive_avg_pool2d(t, out), [x], dtype=dtype)


AVG_CASES = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=1),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=3, stride=2, padding=1, count_include_pad=False),
    dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 0)),
    dict(kernel_size=3, stride=2, ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True, count_include_pad=False),
    dict(kernel_size=2, stride=3, ceil_mode=True),
    dict(kernel_size=4, stride=3, padding=2, ceil_mode=True, count_include_pad=True),
    dict(kernel_size=3, divisor_override=4),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hw", [(7, 7), (8, 5)], ids=str)
@pytest.mark.parametrize("kw", AVG_CASES, ids=repr)
def test_avg_pool2d(torch, kw, hw, dtype):
    x = randn(2, 3, *hw)
    check_op(torch, lambda t: F.avg_pool2d(t, **kw), lambda t: torch.nn.functional.avg_pool2d(t, **kw), [x],
             dtype=dtype)


MAX_CASES = [
    dict(kernel_size=2),
    dict(kernel_size=3, stride=1),
    dict(kernel_size=3, stride=2, padding=1),
    dict(kernel_size=(3, 2), stride=(2, 1), padding=(1, 1)),
    dict(kernel_size=3, stride=2, ceil_mode=True),
    dict(kernel_size=3, stride=2, padding=1, ceil_mode=True),
    dict(kernel_size=2, stride=3, ceil_mode=True),
    dict(kernel_size=3, stride=1, dilation=2),
    dict(kernel_size=3, stride=2, padding=1, dilation=(2, 1)),
    dict(kernel_size=2, stride=2, dilation=2, ceil_mode=True),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("hw", [(7, 7), (8, 5)], ids=str)
@pytest.mark.parametrize("kw", MAX_CASES, ids=repr)
def test_max_pool2d(torch, kw, hw, dtype):
    x = distinct(2, 3, *hw)  # no ties: the routed gradient is unambiguous
    check_op(torch, lambda t: F.max_pool2d(t, **kw), lambda t: torch.nn.functional.max_pool2d(t, **kw), [x],
             dtype=dtype)


def test_max_pool2d_ties_route_to_the_first_maximum(torch):
    """With equal values torch's CPU kernel keeps the first maximum in scan order."""
    x = np.zeros((1, 1, 4, 4))
    x[0, 0, 1:3, 1:3] = 1.0
    for kw in (dict(kernel_size=2), dict(kernel_size=3, stride=1), dict(kernel_size=2, stride=1, padding=1)):
        check_op(torch, lambda t: F.max_pool2d(t, **kw), lambda t: torch.nn.functional.max_pool2d(t, **kw), [x],
                 dtype=np.float64)


def test_max_pool2d_negative_inputs_ignore_padding(torch):
    x = -np.abs(randn(1, 2, 5, 5)) - 1.0
    kw = dict(kernel_size=3, stride=2, padding=1)
    check_op(torch, lambda t: F.max_pool2d(t, **kw), lambda t: torch.nn.functional.max_pool2d(t, **kw), [x],
             dtype=np.float64)


@pytest.mark.parametrize("name, kw", [("avg_pool2d", dict(kernel_size=2)), ("max_pool2d", dict(kernel_size=2)),
                                      ("adaptive_avg_pool2d", dict(output_size=3))])
def test_pool_unbatched_input(torch, name, kw):
    x = distinct(3, 6, 5)
    check_op(torch, lambda t: getattr(F, name)(t, **kw), lambda t: getattr(torch.nn.functional, name)(t, **kw),
             [x], dtype=np.float64)
