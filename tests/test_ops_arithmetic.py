"""Oracle tests for arithmetic: + - * / neg pow matmul exp log sqrt, with broadcasting and scalars."""
import operator

import numpy as np
import pytest

import excite as ex
from oracle import DTYPES, check_op, randn

BINARY = {"add": operator.add, "sub": operator.sub, "mul": operator.mul, "div": operator.truediv}

BROADCAST_PAIRS = [
    ((5,), (5,)),
    ((3, 4), (3, 4)),
    ((2, 3, 4, 5), (2, 3, 1, 1)),  # the SE gate: [B, C, H, W] * [B, C, 1, 1]
    ((2, 3, 1, 1), (2, 3, 4, 5)),
    ((4, 1, 3), (5, 1)),  # both sides stretched
    ((3, 4), (4,)),  # leading dim added
    ((), (2, 3)),  # 0-d tensor against a matrix
    ((1,), (3, 1, 2)),
    ((2, 1, 7), (1, 3, 1)),
]


def _operands(sa, sb, op_name):
    a = randn(*sa, seed=1)
    b = randn(*sb, seed=2)
    if op_name == "div":
        b = np.sign(b) * (np.abs(b) + 0.5)  # keep the divisor away from zero
    return a, b


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes", BROADCAST_PAIRS, ids=str)
@pytest.mark.parametrize("op_name", sorted(BINARY))
def test_binary_broadcasting(torch, op_name, shapes, dtype):
    op = BINARY[op_name]
    check_op(torch, op, op, _operands(*shapes, op_name), dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("op_name", sorted(BINARY))
def test_binary_one_side_without_grad(torch, op_name, dtype):
    op = BINARY[op_name]
    check_op(torch, op, op, _operands((2, 3), (3,), op_name), dtype=dtype, grad=[False, True])
    check_op(torch, op, op, _operands((2, 3), (3,), op_name), dtype=dtype, grad=[True, False])


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("scalar", [2, -1.5, 0.25])
@pytest.mark.parametrize("op_name", sorted(BINARY))
def test_scalar_on_either_side(torch, op_name, scalar, dtype):
    op = BINARY[op_name]
    x = randn(3, 4, seed=3) + 3.0  # reflected division divides by x
    check_op(torch, lambda t: op(t, scalar), lambda t: op(t, scalar), [x], dtype=dtype)
    check_op(torch, lambda t: op(scalar, t), lambda t: op(scalar, t), [x], dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_numpy_scalar_does_not_widen(torch, dtype):
    x = randn(4, seed=4)
    for s in (np.float64(1.5), np.float32(2.0), np.int64(3)):
        check_op(torch, lambda t: t * s + s - s / 2, lambda t: t * float(s) + float(s) - float(s) / 2, [x],
                 dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (5,), (2, 3, 4)])
def test_neg(torch, shape, dtype):
    check_op(torch, lambda t: -t, lambda t: -t, [randn(*shape)], dtype=dtype)
    check_op(torch, lambda t: t.neg(), lambda t: t.neg(), [randn(*shape)], dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("exponent", [0, 1, 2, 3, -1, 0.5, -2.5, 1.7])
def test_pow_scalar_exponent(torch, exponent, dtype):
    x = randn(3, 5, seed=5)
    if not float(exponent).is_integer():
        x = np.abs(x) + 0.2  # fractional powers need a positive base
    elif exponent < 0:
        x = np.sign(x) * (np.abs(x) + 0.3)
    check_op(torch, lambda t: t ** exponent, lambda t: t ** exponent, [x], dtype=dtype)
    check_op(torch, lambda t: t.pow(exponent), lambda t: t.pow(exponent), [x], dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_reflected_pow(torch, dtype):
    check_op(torch, lambda t: 2.0 ** t, lambda t: 2.0 ** t, [randn(6)], dtype=dtype)


MATMUL_SHAPES = [
    ((4,), (4,)),  # dot product -> 0-d
    ((4,), (4, 3)),  # vector @ matrix
    ((3, 4), (4,)),  # matrix @ vector
    ((3, 4), (4, 5)),
    ((2, 3, 4), (2, 4, 5)),  # batched
    ((2, 3, 4), (4, 5)),  # batch broadcast on the left
    ((3, 4), (2, 4, 5)),
    ((2, 1, 3, 4), (5, 4, 2)),  # batch dims broadcast against each other
    ((2, 3, 4), (4,)),
    ((4,), (2, 4, 3)),
]


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shapes", MATMUL_SHAPES, ids=str)
def test_matmul(torch, shapes, dtype):
    sa, sb = shapes
    arrays = [randn(*sa, seed=6), randn(*sb, seed=7)]
    check_op(torch, lambda a, b: a @ b, lambda a, b: a @ b, arrays, dtype=dtype)
    check_op(torch, lambda a, b: a.matmul(b), lambda a, b: a.matmul(b), arrays, dtype=dtype)


@pytest.mark.parametrize("dtype", DTYPES)
def test_matmul_with_numpy_operand(torch, dtype):
    w = randn(4, 3, seed=8).astype(dtype)
    check_op(torch, lambda a: a @ w, lambda a: a @ torch.tensor(w), [randn(2, 4)], dtype=dtype)
    check_op(torch, lambda a: w.T @ a, lambda a: torch.tensor(w.T) @ a, [randn(4, 2)], dtype=dtype)


UNARY = {
    "exp": (lambda t: t.exp(), lambda x: x),
    "log": (lambda t: t.log(), lambda x: np.abs(x) + 0.1),
    "sqrt": (lambda t: t.sqrt(), lambda x: np.abs(x) + 0.1),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("shape", [(), (7,), (2, 3, 4), (1, 3, 1, 5)])
@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary(torch, name, shape, dtype):
    fn, domain = UNARY[name]
    check_op(torch, fn, fn, [domain(randn(*shape, seed=9))], dtype=dtype)


@pytest.mark.parametrize("name", sorted(UNARY))
def test_unary_as_torch_functions(torch, name):
    fn, domain = UNARY[name]
    check_op(torch, getattr(ex, name), getattr(torch, name), [domain(randn(3, 2))], dtype=np.float64)


def test_composite_expression(torch):
    """A graph that reuses inputs along several paths (grads must accumulate)."""

    def f(a, b):
        c = a * b + a / (b * b + 1.0)
        return (c * c).sum() / 3 - (a - b).mean() * c.mean() + (c.exp() + a ** 2).sqrt().sum()

    check_op(torch, f, f, [randn(3, 4, seed=10), randn(4, seed=11)], dtype=np.float64)


@pytest.mark.parametrize("a, b", [([1, 2, 3], [2, 2, 2]), ([True, False], [1, 3])])
def test_integer_arithmetic_dtypes(torch, a, b):
    """Integer and bool tensors follow torch's promotion (true division gives float32)."""
    for op in (operator.add, operator.sub, operator.mul, operator.truediv):
        if op is operator.sub and isinstance(a[0], bool):
            continue  # torch refuses bool subtraction
        ours = op(ex.tensor(a), ex.tensor(b))
        theirs = op(torch.tensor(a), torch.tensor(b))
        assert str(ours.dtype) == str(theirs.dtype).replace("torch.", "")
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6)


@pytest.mark.parametrize("scalar", [2, 2.5, True])
def test_int_tensor_with_python_scalar(torch, scalar):
    for op in (operator.add, operator.mul, operator.truediv):
        ours = op(ex.tensor([1, 2, 3]), scalar)
        theirs = op(torch.tensor([1, 2, 3]), scalar)
        assert str(ours.dtype) == str(theirs.dtype).replace("torch.", "")
        np.testing.assert_allclose(ours.numpy(), theirs.numpy(), rtol=1e-6)


def test_mixed_float_dtypes_promote_like_torch(torch):
    a64, a32 = randn(3, seed=12), randn(3, seed=13).astype(np.float32)
    assert (ex.tensor(a64) + ex.tensor(a32)).dtype == ex.float64
    # a 0-d float64 tensor does not widen a float32 tensor (torch's rule), a dimensioned one does
    assert (ex.tensor(a32) * ex.tensor(np.float64(2.0))).dtype == ex.float32
    assert (torch.tensor(a32) * torch.tensor(np.float64(2.0))).dtype == torch.float32
    x = ex.tensor(a32, requires_grad=True)
    y = ex.tensor(a64, requires_grad=True)
    (x * y).sum().backward()
    assert x.grad.dtype == ex.float32 and y.grad.dtype == ex.float64
    np.testing.assert_allclose(x.grad.numpy(), a64.astype(np.float32), rtol=1e-6)
