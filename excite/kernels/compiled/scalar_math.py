"""Scalar math for compiled kernels: a float32 exp the compiler can vectorise, and the functions that
activation formulas may use (`excite.kernels.activations.FORMULA_FUNCTIONS`).

numba's ``math.exp`` is a libm call per element, which blocks vectorisation; `exp` below is
Cephes' ``expf`` (range reduction by ln 2, degree-6 polynomial, about 1 ulp) for float32 and
``math.exp`` for float64. ``where`` / ``clamp`` compare as torch's ``std::min`` / ``std::max``, so
float32 activations agree with torch to an ulp or two and NaN propagates as there.
"""
import math

import numpy as np
from llvmlite import ir
from numba import types
from numba.core import cgutils
from numba.extending import intrinsic, overload

from ..threads import inline_helper


@intrinsic
def _float32_from_bits(typingctx, bits):
    def codegen(context, builder, signature, args):
        return builder.bitcast(args[0], ir.FloatType())

    return types.float32(types.int32), codegen


@intrinsic
def fma(typingctx, a, b, c):
    """a * b + c with one rounding (llvm.fma: vectorisable, a single instruction on FMA hardware)."""
    if not (a == b == c and isinstance(a, types.Float)):
        return None

    def codegen(context, builder, signature, args):
        llty = context.get_value_type(signature.return_type)
        name = f"llvm.fma.f{signature.return_type.bitwidth}"
        fn = cgutils.get_or_insert_function(builder.module, ir.FunctionType(llty, [llty] * 3), name)
        return builder.call(fn, args)

    return a(a, b, c), codegen


def _llvm_has_ldexp():
    import llvmlite.binding as ll

    return ll.llvm_version_info >= (17,)  # the intrinsic llvm.ldexp came with LLVM 17


LDEXP_INTRINSIC = _llvm_has_ldexp()
_LDEXP_PROBE = """
declare <16 x float> @llvm.ldexp.v16f32.v16i32(<16 x float>, <16 x i32>)
define <16 x float> @probe(<16 x float> %y, <16 x i32> %k) {
  %r = call <16 x float> @llvm.ldexp.v16f32.v16i32(<16 x float> %y, <16 x i32> %k)
  ret <16 x float> %r
}
"""


def target_scales_exactly():
    """Whether the CPU the kernels are compiled for (the kernel cache's CPU and features, `cache.key_parts`)
    scales by powers of two in one instruction: LLVM makes ``llvm.ldexp`` AVX-512's vscalefps there, and a
    libm call per element elsewhere. Asked of this LLVM itself: a probe's machine code."""
    if not LDEXP_INTRINSIC:
        return False
    import llvmlite.binding as ll
    import numba

    features = numba.config.CPU_FEATURES or ll.get_host_cpu_features().flatten()
    if "+avx512f" not in features.split(","):
        return False
    ll.initialize_native_target()
    ll.initialize_native_asmprinter()
    machine = ll.Target.from_default_triple().create_target_machine(
        cpu=numba.config.CPU_NAME or ll.get_host_cpu_name(), features=features, opt=2)
    code = machine.emit_assembly(ll.parse_assembly(_LDEXP_PROBE))
    return "vscalef" in code and "call" not in code


# exp's last step, y * 2**k, as one exact scaling where the target has it, else as two exact products (the
# same bits: both round once, where the result leaves the normal range)
SCALE_BY_LDEXP = target_scales_exactly()


@intrinsic
def _ldexp(typingctx, y, k):
    """y * 2**k, rounded once (llvm.ldexp)."""
    if not (y == types.float32 and k == types.int32):
        return None

    def codegen(context, builder, signature, args):
        fn = cgutils.get_or_insert_function(
            builder.module, ir.FunctionType(ir.FloatType(), [ir.FloatType(), ir.IntType(32)]), "llvm.ldexp.f32.i32")
        return builder.call(fn, args)

    return types.float32(y, k), codegen


def _power_of_two(k):
    """2.0 ** k for -127 <= k <= 127 (normal range only)."""


@overload(_power_of_two)
def _power_of_two_impl(k):
    def impl(k):
        return _float32_from_bits((k + np.int32(127)) << 23)

    return impl


# Cephes' expf: x = k ln2 + r (ln2 in two parts), exp(r) by a degree-6 polynomial (Horner, highest first), then
# times 2**k; past the limits inf or 0. `activation_math` writes the same steps as vector IR from these numbers.
EXP_LOG2E = 1.44269504088896341
EXP_LN2 = (-0.693359375, 2.12194440e-4)
EXP_POLYNOMIAL = (1.9875691500e-4, 1.3981999507e-3, 8.3334519073e-3, 4.1665795894e-2, 1.6666665459e-1,
                  5.0000001201e-1)
EXP_LIMITS = (-87.33654022216797, 88.72283935546875)  # below: 0, above: inf


def exp(x):
    """exp(x); vectorisable for float32."""


@overload(exp)
def _exp_impl(x):
    if x == types.float32:
        def exp32(x):
            # np.floor keeps float32 (math.floor returns an int, which would promote the rest to float64);
            # fused multiply-adds: half the operations of separate ones, and one rounding each
            k = np.floor(fma(x, np.float32(EXP_LOG2E), np.float32(0.5)))
            r = fma(k, np.float32(EXP_LN2[1]), fma(k, np.float32(EXP_LN2[0]), x))
            p = np.float32(EXP_POLYNOMIAL[0])
            p = fma(p, r, np.float32(EXP_POLYNOMIAL[1]))
            p = fma(p, r, np.float32(EXP_POLYNOMIAL[2]))
            p = fma(p, r, np.float32(EXP_POLYNOMIAL[3]))
            p = fma(p, r, np.float32(EXP_POLYNOMIAL[4]))
            p = fma(p, r, np.float32(EXP_POLYNOMIAL[5]))
            y = fma(p * r, r, r) + np.float32(1.0)
            ki = np.int32(k)
            ki = min(max(ki, np.int32(-127)), np.int32(128))
            if SCALE_BY_LDEXP:
                y = _ldexp(y, ki)
            else:
                half = ki >> 1  # 2**k in two factors: k reaches 128 just below the overflow threshold
                y = y * _power_of_two(half) * _power_of_two(ki - half)
            if x > np.float32(EXP_LIMITS[1]):
                y = np.float32(np.inf)
            if x < np.float32(EXP_LIMITS[0]):
                y = np.float32(0.0)
            if x != x:
                y = x
            return y

        return exp32
    return lambda x: math.exp(x)


@inline_helper
def where(condition, a, b):
    return a if condition else b


@inline_helper
def clamp(v, lo, hi):
    # std::min(std::max(v, lo), hi): NaN stays NaN
    v = lo if v < lo else v
    return hi if hi < v else v


def sigmoid(v):
    """1 / (1 + exp(-v)) in v's precision."""


@overload(sigmoid)
def _sigmoid_impl(v):
    one = np.float32(1) if v == types.float32 else np.float64(1)  # a float64 literal would promote float32
    return lambda v: one / (one + exp(-v))


def tanh(v):
    """tanh(v), correctly rounded for float32 (computed in float64: float32's own tanh is 2 ulp off)."""


@overload(tanh)
def _tanh_impl(v):
    if v == types.float32:
        return lambda v: np.float32(np.tanh(np.float64(v)))
    return lambda v: np.tanh(v)


@inline_helper
def erf(v):
    return math.erf(v)


@inline_helper
def sqrt(v):
    return np.sqrt(v)


@inline_helper
def log1p(v):
    return np.log1p(v)
