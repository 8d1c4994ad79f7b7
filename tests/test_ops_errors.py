"""User mistakes raise excite's ShapeError / InvalidArgumentError naming what was expected and received."""
import operator

import numpy as np
import pytest

import excite as ex
import excite.nn.functional as F
from excite.errors import ExciteError, InvalidArgumentError, ShapeError


def raises(error, fn, *fragments):
    """``fn()`` raises ``error`` (never a bare NumPy/Python error) whose message holds every fragment."""
    with pytest.raises(error) as info:
        fn()
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, f"{fragment!r} not in {message!r}"
    return message


def test_error_hierarchy():
    assert issubclass(ShapeError, ValueError) and issubclass(ShapeError, ExciteError)
    assert issubclass(InvalidArgumentError, ValueError) and issubclass(InvalidArgumentError, ExciteError)
    assert ex.ShapeError is ShapeError and ex.InvalidArgumentError is InvalidArgumentError
    assert issubclass(ex.UnsafeCheckpointError, ex.CheckpointError)
    assert issubclass(ex.CheckpointError, ExciteError)


def test_conv2d_with_a_2d_input():
    raises(ShapeError, lambda: F.conv2d(ex.randn(4, 5), ex.randn(2, 3, 3, 3)), "[N, C, H, W]", "[4, 5]")


def test_conv2d_channels_not_divisible_by_groups():
    raises(InvalidArgumentError, lambda: F.conv2d(ex.randn(1, 6, 5, 5), ex.randn(4, 2, 3, 3), groups=4),
           "in_channels (6)", "groups (4)")


def test_conv2d_weight_does_not_match_input_channels():
    raises(ShapeError, lambda: F.conv2d(ex.randn(1, 4, 5, 5), ex.randn(2, 3, 3, 3)), "[N, 3, H, W]", "[1, 4, 5, 5]")


def test_conv2d_kernel_larger_than_input():
    raises(ShapeError, lambda: F.conv2d(ex.randn(1, 3, 2, 2), ex.randn(2, 3, 3, 3)), "3x3", "2x2")


def test_conv2d_bad_arguments():
    x, w = ex.randn(1, 3, 5, 5), ex.randn(2, 3, 3, 3)
    raises(ShapeError, lambda: F.conv2d(x, w, ex.randn(3)), "[2]", "[3]")
    raises(InvalidArgumentError, lambda: F.conv2d(x, w, stride=0), "stride")
    raises(InvalidArgumentError, lambda: F.conv2d(x, w, padding=(1, 2, 3)), "padding", "(1, 2, 3)")
    raises(InvalidArgumentError, lambda: F.conv2d(x, w, padding="full"), "'same'", "'full'")
    raises(InvalidArgumentError, lambda: F.conv2d(x, w, padding="same", stride=2), "same")
    raises(InvalidArgumentError, lambda: F.conv2d(x, w.double()), "float32", "float64")


def test_cross_entropy_class_index_out_of_range():
    raises(InvalidArgumentError, lambda: F.cross_entropy(ex.randn(3, 4), ex.tensor([0, 4, 1])), "4", "0..3")
    raises(InvalidArgumentError, lambda: F.cross_entropy(ex.randn(3, 4), ex.tensor([0, -2, 1])), "-2", "0..3")


def test_cross_entropy_other_mistakes():
    raises(ShapeError, lambda: F.cross_entropy(ex.randn(3, 4), ex.tensor([0, 1])), "[3]", "[2]")
    raises(InvalidArgumentError, lambda: F.cross_entropy(ex.randn(3, 4), ex.tensor([0, 1, 2]), reduction="avg"),
           "'avg'")
    raises(ShapeError, lambda: F.cross_entropy(ex.randn(3, 4), ex.tensor([0, 1, 2]), ex.ones(3)), "[4]", "[3]")
    raises(InvalidArgumentError, lambda: F.cross_entropy(ex.randn(3, 4), ex.tensor([0.5, 1.0, 2.0]).bool()),
           "int64")
    raises(ShapeError, lambda: F.cross_entropy(ex.randn(3, 4), ex.rand(3, 5)), "[3, 4]", "[3, 5]")


def test_matmul_shape_mismatch():
    raises(ShapeError, lambda: ex.randn(2, 3) @ ex.randn(4, 5), "[2, 3]", "[4, 5]")
    raises(ShapeError, lambda: ex.randn(3) @ ex.randn(4), "[3]", "[4]")
    raises(ShapeError, lambda: ex.randn(2, 3, 4) @ ex.randn(3, 4, 5), "[2]", "[3]")
    raises(ShapeError, lambda: ex.tensor(2.0) @ ex.randn(2), "[]", "[2]")
    raises(InvalidArgumentError, lambda: ex.randn(2) @ 3, "int")


@pytest.mark.parametrize("op", [operator.add, operator.sub, operator.mul, operator.truediv])
def test_broadcasting_failure(op):
    a, b = ex.randn(2, 3), ex.randn(4)
    raises(ShapeError, lambda: op(a, b), "[2, 3]", "[4]", "broadcast")
    raises(ShapeError, lambda: op(b, a), "[4]", "[2, 3]")
    raises(ShapeError, lambda: op(a, np.ones(4, dtype=np.float32)), "[2, 3]", "[4]")


def test_comparison_broadcasting_failure():
    raises(ShapeError, lambda: ex.randn(2, 3) < ex.randn(2), "[2, 3]", "[2]")


def test_reshape_to_an_impossible_shape():
    raises(ShapeError, lambda: ex.randn(2, 3).reshape(4, 2), "[4, 2]", "[2, 3]")
    raises(ShapeError, lambda: ex.randn(2, 3).view(-1, 4), "[-1, 4]", "[2, 3]")
    raises(ShapeError, lambda: ex.randn(2, 3).reshape(-1, -1), "[2, 3]")


def test_shape_op_mistakes():
    x = ex.randn(2, 3, 4)
    raises(InvalidArgumentError, lambda: x.permute(0, 1), "3 dims", "[0, 1]")
    raises(InvalidArgumentError, lambda: x.permute(0, 1, 5), "[0, 1, 5]", "[2, 3, 4]")
    raises(InvalidArgumentError, lambda: x.permute(0, 1, 1), "[0, 1, 1]")
    raises(InvalidArgumentError, lambda: x.transpose(0, 3), "dim 3", "3 dims")
    raises(InvalidArgumentError, lambda: x.unsqueeze(4), "dim 4")
    raises(InvalidArgumentError, lambda: x.flatten(2, 1), "start_dim 2", "end_dim 1")
    raises(ShapeError, lambda: ex.cat([x, ex.randn(2, 4, 4)], 2), "[2, 3, 4]", "[2, 4, 4]")
    raises(ShapeError, lambda: ex.stack([ex.randn(2), ex.randn(3)]), "[1, 2]", "[1, 3]")
    raises(InvalidArgumentError, lambda: ex.cat([]), "non-empty")
    raises(InvalidArgumentError, lambda: x[5], "[2, 3, 4]")
    raises(ShapeError, lambda: x.expand(3, 3, 4), "[2, 3, 4]", "[3, 3, 4]")


def test_reduction_mistakes():
    x = ex.randn(2, 3)
    raises(InvalidArgumentError, lambda: x.sum(2), "dim 2", "2 dims")
    raises(InvalidArgumentError, lambda: x.mean(-3), "dim -3")
    raises(InvalidArgumentError, lambda: x.sum((0, 0)), "more than once")
    raises(InvalidArgumentError, lambda: ex.zeros(0, 3).amax(0), "size 0", "[0, 3]")
    raises(InvalidArgumentError, lambda: ex.tensor([1, 2]).mean(), "int64")


def test_pow_and_scalar_mistakes():
    x = ex.randn(3)
    raises(InvalidArgumentError, lambda: x ** x, "scalar exponent")
    raises(InvalidArgumentError, lambda: x ** "2", "str")
    raises(InvalidArgumentError, lambda: ex.tensor([1, 2]) ** -1, "int64", "-1")
    raises(InvalidArgumentError, lambda: (-2.0) ** x, "positive")
    raises(InvalidArgumentError, lambda: x + "a", "str")


def test_linear_mistakes():
    raises(ShapeError, lambda: F.linear(ex.randn(2, 3), ex.randn(4, 5)), "in_features=5", "[2, 3]")
    raises(ShapeError, lambda: F.linear(ex.randn(2, 3), ex.randn(4, 3), ex.randn(5)), "[4]", "[5]")
    raises(ShapeError, lambda: F.linear(ex.randn(2, 3), ex.randn(3)), "2-D weight", "[3]")


def test_pooling_mistakes():
    raises(ShapeError, lambda: F.max_pool2d(ex.randn(4, 4), 2), "[N, C, H, W]", "[4, 4]")
    raises(ShapeError, lambda: F.avg_pool2d(ex.randn(1, 1, 1, 4, 4), 2), "[1, 1, 1, 4, 4]")
    raises(ShapeError, lambda: F.adaptive_avg_pool2d(ex.randn(4), 1), "[4]")
    raises(InvalidArgumentError, lambda: F.max_pool2d(ex.randn(1, 1, 4, 4), 2, padding=2), "padding (2, 2)")
    raises(InvalidArgumentError, lambda: F.adaptive_avg_pool2d(ex.randn(1, 1, 4, 4), 0), "output_size")
    raises(InvalidArgumentError, lambda: F.avg_pool2d(ex.randn(1, 1, 4, 4), (2, 2, 2)), "kernel_size")


def test_batch_norm_mistakes():
    x = ex.randn(4, 3, 2, 2)
    raises(ShapeError, lambda: F.batch_norm(x, ex.zeros(4), ex.ones(4), training=False), "[3]", "[4]")
    raises(ShapeError, lambda: F.batch_norm(ex.randn(4), None, None, training=True), "[N, C, ...]", "[4]")
    raises(InvalidArgumentError, lambda: F.batch_norm(ex.randn(1, 3), None, None, training=True),
           "more than 1 value", "[1, 3]")
    raises(InvalidArgumentError, lambda: F.batch_norm(x, None, None, training=False), "running_mean")


def test_dropout_probability_out_of_range():
    raises(InvalidArgumentError, lambda: F.dropout(ex.randn(3), 1.5), "1.5")
    raises(InvalidArgumentError, lambda: F.dropout(ex.randn(3), -0.1), "-0.1")


def test_ops_reject_integer_inputs_where_torch_does():
    raises(InvalidArgumentError, lambda: F.conv2d(ex.ones(1, 1, 3, 3, dtype=ex.int64), ex.randn(1, 1, 1, 1)),
           "floating-point", "int64")
    raises(InvalidArgumentError, lambda: F.cross_entropy(ex.tensor([[1, 2]]), ex.tensor([0])), "int64")


def test_no_bare_numpy_errors_from_tensor_creation():
    raises(InvalidArgumentError, lambda: ex.tensor([[1, 2], [3]]), "list")
    raises(InvalidArgumentError, lambda: ex.tensor("abc"), "str")
    raises(InvalidArgumentError, lambda: ex.zeros(2, -1), "[2, -1]")
    raises(InvalidArgumentError, lambda: ex.from_numpy([1, 2]), "np.ndarray", "list")
    raises(InvalidArgumentError, lambda: ex.tensor([1.0], dtype="not-a-dtype"), "not-a-dtype")
    raises(InvalidArgumentError, lambda: ex.randn(3).item(), "[3]")
