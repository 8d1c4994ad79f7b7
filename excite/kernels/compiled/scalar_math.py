"""Scalar math for compiled kernels: a float32 exp the compiler can vectorise, and activations.

numba's ``math.exp`` is a libm call per element, which blocks vectorisation; `exp` below is
Cephes' ``expf`` (range reduction by ln 2, degree-6 polynomial, about 1 ulp) for float32 and
``math.exp`` for float64. The activation formulas follow torch's CPU kernels operation by
operation, so float32 results agree to an ulp or two.
"""
import math

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import intrinsic, overload

from ..activation_kinds import (HARDSIGMOID, HARDSWISH, IDENTITY, KINDS, RELU, RELU6, SIGMOID,  # noqa: F401
                               SIGMOID_OF_OUTPUT, SILU)


@intrinsic
def _float32_from_bits(typingctx, bits):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


def _power_of_two(k):
    """2.0 ** k for -127 <= k <= 127 (normal range only)."""


@overload(_power_of_two)
def _power_of_two_impl(k):
    def impl(k):
        return _float32_from_bits((k + np.int32(127)) << 23)

    return impl


def exp(x):
    """exp(x); vectorisable for float32."""


@overload(exp)
def _exp_impl(x):
    if x == types.float32:
        def exp32(x):
            # np.floor keeps float32 (math.floor returns an int, which would promote the rest to float64)
            k = np.floor(x * np.float32(1.44269504088896341) + np.float32(0.5))
            r = x - k * np.float32(0.693359375) - k * np.float32(-2.12194440e-4)
            p = np.float32(1.9875691500e-4)
            p = p * r + np.float32(1.3981999507e-3)
            p = p * r + np.float32(8.3334519073e-3)
            p = p * r + np.float32(4.1665795894e-2)
            p = p * r + np.float32(1.6666665459e-1)
            p = p * r + np.float32(5.0000001201e-1)
            y = p * r * r + r + np.float32(1.0)
            ki = np.int32(k)
            ki = min(max(ki, np.int32(-127)), np.int32(128))
            half = ki >> 1  # 2**k in two factors: k reaches 128 just below the overflow threshold
            y = y * _power_of_two(half) * _power_of_two(ki - half)
            if x > np.float32(88.72283935546875):
                y = np.float32(np.inf)
            if x < np.float32(-87.33654022216797):
                y = np.float32(0.0)
            if x != x:
                y = x
            return y

        return exp32
    return lambda x: math.exp(x)


def activate(z, kind):
    """The activation ``kind`` applied to the scalar ``z`` (formulas as in torch's CPU kernels)."""


def activate_grad(z, kind):
    """d activation / dz at the pre-activation ``z`` (at the output for SIGMOID_OF_OUTPUT)."""


def _constants(z):
    """Constants in z's precision: a float64 literal would promote float32 arithmetic."""
    f = np.float32 if z == types.float32 else np.float64
    return f(0), f(1), f(3), f(6), f(0.5)


@overload(activate)
def _activate_impl(z, kind):
    zero, one, three, six, _ = _constants(z)

    def impl(z, kind):
        # std::max(a, b) is (a < b) ? b : a, std::min(a, b) is (b < a) ? b : a: NaN propagates as in torch
        if kind == RELU:
            return zero if z <= zero else z
        if kind == RELU6:
            return zero if z <= zero else (six if z > six else z)
        if kind == SIGMOID:
            return one / (one + exp(-z))
        if kind == HARDSIGMOID:
            t = z + three
            t = zero if t < zero else t
            return (six if six < t else t) / six
        if kind == HARDSWISH:
            t = z + three
            t = zero if t < zero else t
            return z * (six if six < t else t) / six
        if kind == SILU:
            return z / (one + exp(-z))
        return z

    return impl


@overload(activate_grad)
def _activate_grad_impl(z, kind):
    zero, one, three, six, half = _constants(z)

    def impl(z, kind):
        # NaN inputs follow torch's vectorised CPU kernels: relu passes the gradient, hardswish gives NaN
        if kind == RELU:
            return zero if z <= zero else one
        if kind == RELU6:
            return one if (z > zero and z < six) else zero
        if kind == SIGMOID:
            s = one / (one + exp(-z))
            return s * (one - s)
        if kind == HARDSIGMOID:
            return one / six if (z > -three and z < three) else zero
        if kind == HARDSWISH:  # torch 2.14: 0 up to -3 inclusive, 1 from 3 inclusive
            if z <= -three:
                return zero
            if z >= three:
                return one
            return z / three + half
        if kind == SILU:
            s = one / (one + exp(-z))
            return s * (one + z * (one - s))
        if kind == SIGMOID_OF_OUTPUT:  # z is the output of sigmoid here
            return z * (one - z)
        return one

    return impl
