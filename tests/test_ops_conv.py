"""Oracle tests for conv2d (dense, 1x1, depthwise, grouped, strides/padding/dilation) and linear."""
import numpy as np
import pytest

import excite.nn.functional as F
from oracle import DTYPES, check_op, randn

# (input shape, weight shape, bias?, kwargs)
CONV_CASES = {
    "dense3x3": ((2, 3, 7, 6), (4, 3, 3, 3), True, {}),
    "dense_pad1": ((2, 3, 7, 6), (5, 3, 3, 3), True, dict(padding=1)),
    "pointwise": ((2, 8, 5, 5), (6, 8, 1, 1), True, {}),
    "pointwise_stride2": ((1, 4, 7, 7), (3, 4, 1, 1), False, dict(stride=2)),
    "depthwise": ((2, 6, 9, 8), (6, 1, 3, 3), True, dict(padding=1, groups=6)),
    "depthwise_5x5_stride2": ((2, 4, 11, 10), (4, 1, 5, 5), False, dict(stride=2, padding=2, groups=4)),
    "depthwise_multiplier": ((2, 3, 7, 7), (6, 1, 3, 3), True, dict(padding=1, groups=3)),
    "grouped": ((2, 6, 7, 7), (4, 3, 3, 3), True, dict(groups=2, padding=1)),
    "grouped_3": ((1, 6, 6, 5), (9, 2, 3, 1), True, dict(groups=3, stride=(2, 1), padding=(1, 0))),
    "asym_stride_padding": ((2, 3, 9, 8), (4, 3, 3, 5), True, dict(stride=(2, 3), padding=(2, 1))),
    "tuple_args": ((1, 2, 10, 9), (3, 2, 3, 3), True, dict(stride=(1, 2), padding=(0, 2), dilation=(2, 1))),
    "dilation2": ((2, 3, 11, 11), (2, 3, 3, 3), True, dict(dilation=2, padding=2)),
    "dilation_depthwise": ((1, 3, 9, 9), (3, 1, 3, 3), True, dict(dilation=(2, 3), padding=(2, 3), groups=3)),
    "no_bias_odd": ((3, 5, 7, 5), (7, 5, 2, 3), False, dict(stride=(3, 2), padding=(1, 1))),
    "stride_leaves_remainder": ((1, 2, 8, 8), (2, 2, 3, 3), True, dict(stride=3)),
    "kernel_equals_input": ((2, 3, 4, 4), (5, 3, 4, 4), True, {}),
    "same_odd_kernel": ((2, 3, 6, 7), (4, 3, 3, 5), True, dict(padding="same")),
    "same_even_kernel": ((2, 3, 6, 7), (4, 3, 4, 2), True, dict(padding="same")),
    "same_dilated": ((1, 2, 7, 7), (3, 2, 3, 2), True, dict(padding="same", dilation=(2, 3))),
    "same_depthwise": ((2, 4, 6, 6), (4, 1, 3, 3), False, dict(padding="same", groups=4)),
    "valid": ((2, 3, 6, 7), (4, 3, 3, 3), True, dict(padding="valid")),
    "one_pixel": ((2, 3, 1, 1), (4, 3, 1, 1), True, {}),
}


@pytest.mark.filterwarnings("ignore:Using padding='same' with even kernel")  # torch's own note on a copy
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("case", sorted(CONV_CASES))
def test_conv2d(torch, case, dtype):
    xs, ws, has_bias, kw = CONV_CASES[case]
    arrays = [randn(*xs, seed=1), randn(*ws, seed=2) * 0.5]
    if has_bias:
        arrays.append(randn(ws[0], seed=3))
    check_op(torch, lambda *t: F.conv2d(*t, **kw), lambda *t: torch.nn.functional.conv2d(*t, **kw), arrays,
             dtype=dtype)


@pytest.mark.parametrize("case", ["dense3x3", "depthwise", "grouped"])
def test_conv2d_partial_grads(torch, case):
    """Only the input, or only the weight, requires grad (frozen layers, fixed inputs)."""
    xs, ws, _, kw = CONV_CASES[case]
    arrays = [randn(*xs, seed=1), randn(*ws, seed=2)]
    for grad in ([True, False], [False, True]):
        check_op(torch, lambda *t: F.conv2d(*t, **kw), lambda *t: torch.nn.functional.conv2d(*t, **kw), arrays,
                 dtype=np.float64, grad=grad)


@pytest.mark.parametrize("case", ["dense_pad1", "pointwise", "pointwise_stride2", "depthwise", "grouped"])
def test_conv2d_empty_batch(torch, case):
    """A batch of no images gives an empty output of the right shape, as torch's (and empty gradients)."""
    xs, ws, has_bias, kw = CONV_CASES[case]
    arrays = [randn(*xs, seed=1)[:0], randn(*ws, seed=2)]
    if has_bias:
        arrays.append(randn(ws[0], seed=3))
    check_op(torch, lambda *t: F.conv2d(*t, **kw), lambda *t: torch.nn.functional.conv2d(*t, **kw), arrays,
             dtype=np.float32)


def test_conv2d_unbatched_input(torch):
    arrays = [randn(3, 6, 5, seed=1), randn(4, 3, 3, 3, seed=2), randn(4, seed=3)]
    check_op(torch, lambda *t: F.conv2d(*t, padding=1), lambda *t: torch.nn.functional.conv2d(*t, padding=1),
             arrays, dtype=np.float64)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("xs, ws, has_bias", [
    ((4, 5), (3, 5), True), ((4, 5), (3, 5), False), ((2, 3, 5), (7, 5), True), ((5,), (2, 5), True),
    ((2, 2, 3, 4), (1, 4), False),
], ids=str)
def test_linear(torch, xs, ws, has_bias, dtype):
    arrays = [randn(*xs, seed=1), randn(*ws, seed=2)]
    if has_bias:
        arrays.append(randn(ws[0], seed=3))
    check_op(torch, F.linear, torch.nn.functional.linear, arrays, dtype=dtype)
