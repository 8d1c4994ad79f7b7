"""The one registry of elementwise activations: one record per activation holds everything about it.

A record gives the activation's name (the functional's: ``F.hardswish``), the name of its module
class (``nn.Hardswish``), its formula and its derivative as expressions, and its ONNX lowering.
Every layer reads the registry: the compiled kernels generate their per-activation dispatch from
the formulas (`compiled.activation_math`), the NumPy paths evaluate the same formulas
(`activation.evaluate`), autograd has one `Function` for all of them, `excite.nn` makes the module
classes and functionals from the records, and the ONNX exporter calls the lowering.

Formulas are Python expressions in ``x`` (the input) — or ``y`` (the output) for
``derivative_of_output`` — over numbers, arithmetic, comparisons combined with ``&`` / ``|`` and
the functions in `FORMULA_FUNCTIONS`. ``where(c, a, b)`` is ``c ? a : b``; ``clamp(v, lo, hi)`` and
the comparisons follow torch's CPU kernels (``std::min`` / ``std::max``), so NaN propagates as there.

The built-in records below are compiled into the kernels; an activation registered later (with
`register`, usually through ``excite.nn.register_activation``) runs through NumPy, so a kernel
cached on disk never meets a code it was not compiled for.
"""
from dataclasses import dataclass, field, replace
from typing import Callable, Optional

from ..errors import InvalidArgumentError

FORMULA_FUNCTIONS = ("where", "clamp", "exp", "log1p", "tanh", "erf", "sqrt", "sigmoid")


@dataclass(frozen=True)
class Activation:
    """One elementwise activation.

    ``onnx`` lowers it into ONNX nodes: ``onnx(emit, x) -> name``, where ``emit(op_type, *inputs,
    **attributes)`` adds one node and returns its output's name, and ``constant(value)`` (the third
    argument) adds a float scalar initializer.
    """

    name: str
    module: str
    forward: str
    derivative: str
    onnx: Callable
    derivative_of_output: Optional[str] = None  # when given, backward saves the output, not the input
    inplace_argument: bool = True  # torch's functional and module take inplace= (a no-op here)
    show_inplace: bool = True  # the module's repr prints 'inplace=True' (torch: not for Hardsigmoid/Hardswish)
    module_attributes: dict = field(default_factory=dict)  # class attributes torch's module has (ReLU6.max_val)
    doc: str = ""
    code: int = -1  # assigned by `register`: the integer the compiled kernels branch on
    builtin: bool = False  # compiled into the kernels (see the module docstring)

    @property
    def saves_output(self):
        return self.derivative_of_output is not None


IDENTITY = 0  # the code of "no activation"
OUTPUT_DERIVATIVE = 1 << 8  # grad codes: code (derivative at the input) or code + this (at the output)
_REGISTRY = {}
_BY_CODE = {}


def register(record):
    """Add ``record`` to the registry and give it a code; returns the registered record."""
    if not isinstance(record, Activation):
        raise InvalidArgumentError(f"register expects an Activation record, got {type(record).__name__}")
    if not record.name.isidentifier() or not record.module.isidentifier():
        raise InvalidArgumentError(f"an activation's name and module must be identifiers, got "
                                   f"{record.name!r} and {record.module!r}")
    if record.name in _REGISTRY:
        raise InvalidArgumentError(f"activation {record.name!r} is already registered")
    if any(r.module == record.module for r in _REGISTRY.values()):
        raise InvalidArgumentError(f"an activation with module class {record.module!r} is already registered")
    for role, formula, variable in (("forward", record.forward, "x"), ("derivative", record.derivative, "x"),
                                    ("derivative_of_output", record.derivative_of_output, "y")):
        if formula is not None:
            check_formula(formula, variable, f"activation {record.name!r}: {role}")
    record = replace(record, code=len(_BY_CODE) + 1)
    _REGISTRY[record.name] = record
    _BY_CODE[record.code] = record
    return record


def check_formula(formula, variable, what):
    """Raise InvalidArgumentError unless ``formula`` is an expression in ``variable`` and the formula functions."""
    import ast

    try:
        tree = ast.parse(formula, mode="eval")
    except SyntaxError as e:
        raise InvalidArgumentError(f"{what}: {formula!r} is not a Python expression ({e.msg})") from None
    allowed = set(FORMULA_FUNCTIONS) | {variable}
    for node in ast.walk(tree):
        if isinstance(node, ast.Name) and node.id not in allowed:
            raise InvalidArgumentError(f"{what}: {formula!r} uses {node.id!r}; a formula may use {variable!r} and "
                                       f"{', '.join(FORMULA_FUNCTIONS)}")
        if isinstance(node, (ast.Attribute, ast.Subscript, ast.Lambda, ast.Starred)):
            raise InvalidArgumentError(f"{what}: {formula!r} may only use numbers, arithmetic, comparisons and "
                                       f"the functions {', '.join(FORMULA_FUNCTIONS)}")


def get(name):
    """The record of activation ``name``; None (no activation) gives None."""
    if name is None or name == "identity":
        return None
    record = _REGISTRY.get(name)
    if record is None:
        raise InvalidArgumentError(f"unknown activation {name!r}; registered: {', '.join(_REGISTRY)}")
    return record


def code(name):
    """The integer the compiled kernels use for activation ``name`` (IDENTITY for None)."""
    record = get(name)
    return IDENTITY if record is None else record.code


def records():
    """Every registered record, in registration order."""
    return list(_REGISTRY.values())


def builtin_records():
    """The records compiled into the kernels."""
    return [r for r in _REGISTRY.values() if r.builtin]


def compiled(name):
    """True if the compiled kernels implement activation ``name`` (None: the identity)."""
    record = get(name)
    return record is None or record.builtin


# ----- the built-in activations (torch's formulas; the derivatives as torch 2.14's CPU kernels) ------------
def _unary(op_type, **attributes):
    return lambda emit, x, constant: emit(op_type, x, **attributes)


def _relu6_onnx(emit, x, constant):
    return emit("Clip", x, constant(0.0), constant(6.0))


def _silu_onnx(emit, x, constant):
    return emit("Mul", x, emit("Sigmoid", x))


def _gelu_onnx(emit, x, constant):
    # x * 0.5 * (1 + erf(x / sqrt(2))): Erf exists from opset 9 (Gelu only from 20)
    erf = emit("Erf", emit("Mul", x, constant(_SQRT_HALF)))
    return emit("Mul", emit("Mul", x, constant(0.5)), emit("Add", erf, constant(1.0)))


def _gelu_tanh_onnx(emit, x, constant):
    cube = emit("Mul", emit("Mul", x, x), x)
    inner = emit("Mul", emit("Add", x, emit("Mul", cube, constant(_GELU_KAPPA))), constant(_GELU_BETA))
    return emit("Mul", emit("Mul", x, constant(0.5)), emit("Add", emit("Tanh", inner), constant(1.0)))


_SQRT_HALF, _GELU_BETA, _GELU_KAPPA = 0.7071067811865476, 0.7978845608028654, 0.044715  # 1/sqrt(2), sqrt(2/pi)
_GELU_TANH_INNER = f"tanh({_GELU_BETA} * (x + {_GELU_KAPPA} * x * x * x))"

_BUILTINS = (
    Activation("relu", "ReLU", forward="where(x <= 0, 0, x)", derivative="where(x <= 0, 0, 1)",
               onnx=_unary("Relu"), doc="max(x, 0)"),
    Activation("relu6", "ReLU6", forward="where(x <= 0, 0, where(x > 6, 6, x))",
               derivative="where((x > 0) & (x < 6), 1, 0)", onnx=_relu6_onnx,
               module_attributes={"min_val": 0.0, "max_val": 6.0}, doc="min(max(x, 0), 6)"),
    Activation("sigmoid", "Sigmoid", forward="1 / (1 + exp(-x))", derivative="sigmoid(x) * (1 - sigmoid(x))",
               derivative_of_output="y * (1 - y)", onnx=_unary("Sigmoid"), inplace_argument=False,
               doc="1 / (1 + exp(-x))"),
    Activation("tanh", "Tanh", forward="tanh(x)", derivative="1 - tanh(x) * tanh(x)",
               derivative_of_output="1 - y * y", onnx=_unary("Tanh"), inplace_argument=False, doc="tanh(x)"),
    # torch: relu6(x + 3) / 6 == ONNX HardSigmoid(alpha=1/6, beta=1/2)
    Activation("hardsigmoid", "Hardsigmoid", forward="clamp(x + 3, 0, 6) / 6",
               derivative="where((x > -3) & (x < 3), 1 / 6, 0)",
               onnx=_unary("HardSigmoid", alpha=1.0 / 6.0, beta=0.5), show_inplace=False,
               doc="relu6(x + 3) / 6"),
    # torch 2.14's derivative: 0 up to -3 inclusive, 1 from 3 inclusive
    Activation("hardswish", "Hardswish", forward="x * clamp(x + 3, 0, 6) / 6",
               derivative="where(x <= -3, 0, where(x >= 3, 1, x / 3 + 0.5))", onnx=_unary("HardSwish"),
               show_inplace=False, doc="x * relu6(x + 3) / 6"),
    Activation("silu", "SiLU", forward="x / (1 + exp(-x))", derivative="sigmoid(x) * (1 + x * (1 - sigmoid(x)))",
               onnx=_silu_onnx, doc="x * sigmoid(x) (also called swish)"),
    # nn.GELU(approximate='none'): x * Phi(x), Phi the standard normal CDF (torch's erf form and derivative);
    # "+ 0 * x" is NaN at +inf only, where torch's vectorised erf gives NaN too
    Activation("gelu", "GELU", forward=f"x * 0.5 * (1 + erf(x * {_SQRT_HALF})) + 0 * x",
               derivative=f"0.5 * (1 + erf(x * {_SQRT_HALF})) + x * 0.3989422804014327 * exp(-0.5 * x * x)",
               onnx=_gelu_onnx, inplace_argument=False, doc="x * 0.5 * (1 + erf(x / sqrt(2)))"),
)
for _record in _BUILTINS:
    register(replace(_record, builtin=True))
del _record

# nn.GELU(approximate='tanh') / F.gelu(approximate='tanh'), which have no module or functional of their own; not
# compiled into the kernels (MaxViT uses the erf form): their epilogues apply it afterwards, in NumPy
register(Activation("_gelu_tanh", "_GELUTanh", forward=f"0.5 * x * (1 + {_GELU_TANH_INNER})",
                    derivative=f"0.5 * (1 + {_GELU_TANH_INNER}) + 0.5 * x * (1 - {_GELU_TANH_INNER} * "
                               f"{_GELU_TANH_INNER}) * {_GELU_BETA} * (1 + {3 * _GELU_KAPPA} * x * x)",
                    onnx=_gelu_tanh_onnx, inplace_argument=False,
                    doc="0.5 * x * (1 + tanh(sqrt(2 / pi) * (x + 0.044715 * x^3)))"))
