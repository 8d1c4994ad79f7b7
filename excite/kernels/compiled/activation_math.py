"""The activations of the registry (`excite.kernels.activations`) as compiled scalar functions, and
the per-activation dispatch that the elementwise kernels are built from — both generated from the
records' formulas.

`activate(z, kind)` and `activate_grad(v, kind)` branch on the integer code; `by_kind(body)` makes
an inline helper that branches *once* and calls ``body`` with the code as a compile-time
constant, so the loop inside ``body`` holds one activation and vectorises. Only the built-in
records are compiled (see `activations`); numbers in a formula take the operand's precision, so
float32 arithmetic stays float32.
"""
import ast
import inspect

import numpy as np
from llvmlite import ir
from numba import types
from numba.extending import overload

from .. import activations as registry
from . import scalar_math
from ..threads import inline_helper

OUTPUT_DERIVATIVE = registry.OUTPUT_DERIVATIVE  # grad codes: code (derivative at the input) or code + this
RECORDS = tuple(registry.builtin_records())  # fixed at import: what the cached kernels are compiled for
KINDS = (registry.IDENTITY,) + tuple(r.code for r in RECORDS)
GRAD_KINDS = KINDS + tuple(r.code + OUTPUT_DERIVATIVE for r in RECORDS if r.saves_output)


def grad_code(record, at_output):
    return record.code + OUTPUT_DERIVATIVE if at_output else record.code


class _TypedNumbers(ast.NodeTransformer):
    """Every number literal ``3`` becomes ``F(3)``: the operand's float type, not Python's float64."""

    def visit_Constant(self, node):
        if isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
            return ast.copy_location(ast.Call(ast.Name("F", ast.Load()), [node], []), node)
        return node


def _typed(formula):
    tree = _TypedNumbers().visit(ast.parse(formula, mode="eval"))
    return ast.unparse(ast.fix_missing_locations(tree))


def _branches(cases, argument):
    """Source of ``impl(<argument>, kind)`` returning the formula (in ``x``) of the matching code."""
    lines = [f"def impl({argument}, kind):", f"    x = {argument}"]
    for code, formula in cases:
        lines.append(f"    if kind == {code}:")
        lines.append(f"        return {_typed(formula)}")
    return lines


def _formula_namespace(float_type):
    names = {name: getattr(scalar_math, name) for name in registry.FORMULA_FUNCTIONS}
    names["F"] = float_type
    return names


def _float_type(z):
    return np.float32 if z == types.float32 else np.float64


def activate(z, kind):
    """The activation with code ``kind`` applied to the scalar ``z``."""


def activate_grad(v, kind):
    """d activation / dz at the pre-activation ``v`` (at the output ``v`` for grad codes past OUTPUT_DERIVATIVE)."""


@overload(activate)
def _activate_impl(z, kind):
    namespace = _formula_namespace(_float_type(z))
    source = _branches([(r.code, r.forward) for r in RECORDS], "z") + ["    return x"]
    exec("\n".join(source), namespace)
    return namespace["impl"]


@overload(activate_grad)
def _activate_grad_impl(v, kind):
    namespace = _formula_namespace(_float_type(v))
    cases = [(r.code, r.derivative) for r in RECORDS]
    lines = _branches(cases, "v")
    # the derivatives in terms of the output: the same variable, renamed
    for r in RECORDS:
        if r.saves_output:
            lines.append(f"    if kind == {grad_code(r, True)}:")
            lines.append(f"        y = x")
            lines.append(f"        return {_typed(r.derivative_of_output)}")
    lines.append("    return F(1)")
    exec("\n".join(lines), namespace)
    return namespace["impl"]


def by_kind(body, kinds=KINDS):
    """An inline helper ``f(*args, kind)`` that calls ``body(*args, K)`` with ``K`` a compile-time
    constant: one branch per code in ``kinds``, the identity (code 0) otherwise."""
    params = list(inspect.signature(body).parameters)[:-1]
    args = ", ".join(params)
    lines = [f"def {body.__name__}_by_kind({args}, kind):"]
    for k in kinds:
        if k != registry.IDENTITY:
            lines.append(f"    if kind == {k}:")
            lines.append(f"        return body({args}, {k})")
    lines.append(f"    return body({args}, {registry.IDENTITY})")
    namespace = {"body": body}
    exec("\n".join(lines), namespace)
    function = namespace[f"{body.__name__}_by_kind"]
    function.__doc__ = body.__doc__
    return inline_helper(function, cache=False)


# ----- the activations on SIMD vectors, for the matrix products' tiles ----------------------------
class _NoVectorForm(Exception):
    pass


_COMPARE = {ast.Lt: "<", ast.LtE: "<=", ast.Gt: ">", ast.GtE: ">="}
_ARITHMETIC = {ast.Add: "fadd", ast.Sub: "fsub", ast.Mult: "fmul", ast.Div: "fdiv"}


def _emit(node, builder, vec, x):
    """LLVM IR of the formula ``node`` on the vector ``x`` (of type ``vec``), operation for operation as
    the scalar code computes it (so the two agree to the bit); `_NoVectorForm` for anything past
    arithmetic, comparisons, ``where`` and ``clamp``."""
    if isinstance(node, ast.Name) and node.id == "x":
        return x
    if isinstance(node, ast.Constant) and isinstance(node.value, (int, float)) and not isinstance(node.value, bool):
        return ir.Constant(vec, [float(node.value)] * vec.count)
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, ast.USub):
        return builder.fneg(_emit(node.operand, builder, vec, x))
    if isinstance(node, ast.BinOp) and type(node.op) in _ARITHMETIC:
        op = getattr(builder, _ARITHMETIC[type(node.op)])
        return op(_emit(node.left, builder, vec, x), _emit(node.right, builder, vec, x))
    if isinstance(node, ast.Compare) and len(node.ops) == 1 and type(node.ops[0]) in _COMPARE:
        # Python's float comparisons are false on NaN: LLVM's ordered ones
        return builder.fcmp_ordered(_COMPARE[type(node.ops[0])], _emit(node.left, builder, vec, x),
                                    _emit(node.comparators[0], builder, vec, x))
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and not node.keywords:
        args = [_emit(a, builder, vec, x) for a in node.args]
        if node.func.id == "where" and len(args) == 3:
            return builder.select(*args)
        if node.func.id == "clamp" and len(args) == 3:  # scalar_math.clamp, NaN staying NaN
            v, lo, hi = args
            v = builder.select(builder.fcmp_ordered("<", v, lo), lo, v)
            return builder.select(builder.fcmp_ordered("<", hi, v), hi, v)
        if node.func.id == "exp" and len(args) == 1:
            return _emit_exp(builder, vec, args[0])
    raise _NoVectorForm(ast.dump(node))


def _intrinsic(builder, name, vec, arity):
    """The LLVM intrinsic ``llvm.<name>`` on vectors of type ``vec``, as a function of IR values."""
    full_name = f"llvm.{name}.v{vec.count}f{32 if isinstance(vec.element, ir.FloatType) else 64}"
    function = builder.module.globals.get(full_name)
    if function is None:
        function = ir.Function(builder.module, ir.FunctionType(vec, [vec] * arity), full_name)
    return lambda *args: builder.call(function, args)


def _emit_exp(builder, vec, x):
    """`scalar_math.exp` on a vector, operation for operation: Cephes' expf for float32 (so the two agree to
    the bit; the scaling by 2**k as `scalar_math.SCALE_BY_LDEXP` says), llvm.exp (the libm call the scalar
    float64 code makes, per lane) for float64."""
    if not isinstance(vec.element, ir.FloatType):
        return _intrinsic(builder, "exp", vec, 1)(x)
    fma, floor = _intrinsic(builder, "fma", vec, 3), _intrinsic(builder, "floor", vec, 1)

    def const(value):
        return ir.Constant(vec, [float(np.float32(value))] * vec.count)

    ints = ir.VectorType(ir.IntType(32), vec.count)

    def int_const(value):
        return ir.Constant(ints, [value] * vec.count)

    scalef = scalar_math.SCALE_BY_LDEXP and vec.count == 16
    if scalef:  # (see below)
        x_in = builder.select(builder.fcmp_ordered(">", x, const(_EXP_OVER)), const(_EXP_OVER), x)
    else:
        x_in = x
    k = floor(fma(x_in, const(scalar_math.EXP_LOG2E), const(0.5)))
    r = fma(k, const(scalar_math.EXP_LN2[1]), fma(k, const(scalar_math.EXP_LN2[0]), x_in))
    p = const(scalar_math.EXP_POLYNOMIAL[0])
    for c in scalar_math.EXP_POLYNOMIAL[1:]:
        p = fma(p, r, const(c))
    y = builder.fadd(fma(builder.fmul(p, r), r, r), const(1.0))
    if scalef:
        # AVX-512's vscalefps, which takes the power as a float and zeroes the lanes its mask leaves out: k as
        # it is, with no conversion to an integer, clamp and back (llvm.ldexp's lowering), and the limits in two
        # operations instead of six. The same bits as the scalar code:
        # - from the lower limit to the upper one x_in is x, and k lies in [-126, 128], where the clamp of k
        #   changes nothing;
        # - above the upper limit, x_in <= _EXP_OVER keeps r exact; k is 128 and y >= 1 there (r > 0), so the
        #   scaling overflows to inf;
        # - below the lower limit, the mask gives 0;
        # - a NaN passes every step (its lanes kept: the mask's comparison is true on NaN), as the quiet NaN x.
        kept = builder.bitcast(builder.fcmp_unordered(">=", x, const(scalar_math.EXP_LIMITS[0])), ir.IntType(16))
        return builder.call(_scalef16(builder.module), [y, k, const(0.0), kept,
                                                        ir.Constant(ir.IntType(32), _CURRENT_ROUNDING)])
    ki = builder.fptosi(k, ints)
    ki = builder.select(builder.icmp_signed(">", ki, int_const(-127)), ki, int_const(-127))  # max, then min
    ki = builder.select(builder.icmp_signed("<", ki, int_const(128)), ki, int_const(128))
    if scalar_math.SCALE_BY_LDEXP:
        name = f"llvm.ldexp.v{vec.count}f32.v{vec.count}i32"
        ldexp = builder.module.globals.get(name) or ir.Function(builder.module, ir.FunctionType(vec, [vec, ints]), name)
        y = builder.call(ldexp, [y, ki])
    else:
        half = builder.ashr(ki, int_const(1))

        def power_of_two(n):
            return builder.bitcast(builder.shl(builder.add(n, int_const(127)), int_const(23)), vec)

        y = builder.fmul(builder.fmul(y, power_of_two(half)), power_of_two(builder.sub(ki, half)))
    return _exp_limits(builder, x, y, const)


def _exp_limits(builder, x, y, const):
    """exp's result y of x past `scalar_math.EXP_LIMITS` (inf above, 0 below) and for NaN (x itself)."""
    y = builder.select(builder.fcmp_ordered(">", x, const(scalar_math.EXP_LIMITS[1])), const(np.inf), y)
    y = builder.select(builder.fcmp_ordered("<", x, const(scalar_math.EXP_LIMITS[0])), const(0.0), y)
    return builder.select(builder.fcmp_unordered("uno", x, x), x, y)


_CURRENT_ROUNDING = 4  # _MM_FROUND_CUR_DIRECTION
_EXP_OVER = 89.0  # above exp's upper limit (every result inf), below where r = x - k ln 2 would lose exactness


def _scalef16(module):
    """AVX-512's vscalefps on 16 floats: (a, b, passthrough, lane mask, rounding) -> a * 2**floor(b)."""
    name = "llvm.x86.avx512.mask.scalef.ps.512"
    vec = ir.VectorType(ir.FloatType(), 16)
    return module.globals.get(name) or ir.Function(
        module, ir.FunctionType(vec, [vec, vec, vec, ir.IntType(16), ir.IntType(32)]), name)


def _vector_codes():
    codes = []
    for record in RECORDS:
        try:
            tree = ast.parse(record.forward, mode="eval").body
            module = ir.Module()
            block = ir.Function(module, ir.FunctionType(ir.VoidType(), []), "probe").append_basic_block()
            _emit(tree, ir.IRBuilder(block), ir.VectorType(ir.FloatType(), 4), ir.Constant(ir.VectorType(ir.FloatType(), 4), None))
        except _NoVectorForm:
            continue
        codes.append(record.code)
    return tuple(codes)


VECTOR_KINDS = (registry.IDENTITY,) + _vector_codes()  # the activations `emit_activation` writes as vector code


def emit_activation(builder, code, x):
    """The activation ``code`` (one of VECTOR_KINDS) on the IR vector ``x``."""
    if code == registry.IDENTITY:
        return x
    record = next(r for r in RECORDS if r.code == code)
    return _emit(ast.parse(record.forward, mode="eval").body, builder, x.type, x)


def _in_tile_test():
    source = "def in_tile(kind):\n    return " + " or ".join(f"kind == {k}" for k in VECTOR_KINDS)
    namespace = {}
    exec(source, namespace)
    function = namespace["in_tile"]
    function.__doc__ = "Whether the matrix products' tiles apply the activation ``kind`` (VECTOR_KINDS) themselves."
    return inline_helper(function, cache=False)


activated_in_tile = _in_tile_test()
