"""Which converter turns which excite module class into ONNX nodes, and the walk that calls them."""
import numpy as np

from ..errors import InvalidArgumentError
from ..tensor import Tensor

_CONVERTERS = {}  # module class -> (converter, names of the methods whose behaviour it reproduces)


def register_converter(module_class, methods=("forward",)):
    """Decorator: ``fn(ctx, module, qualname, x) -> Value`` exports ``module_class``.

    ``x`` is the incoming ``Value`` (its ONNX ``name`` and example ``shape``). A converter adds
    nodes with ``ctx.builder.node(op_type, inputs, out_shape, qualname, **attributes)`` (which
    returns the output Value), weights with ``ctx.parameter(qualname, "weight", module.weight)``,
    other arrays with ``ctx.builder.constant(hint, array)``, and exports a child layer with
    ``ctx.child(module, qualname, "child_name", x)``.

    A subclass inherits the converter only while it inherits every method in ``methods``
    unchanged; a subclass that overrides ``forward`` computes something else, so it must get
    its own converter instead of being exported silently wrong.
    """

    def decorate(fn):
        _CONVERTERS[module_class] = (fn, tuple(methods))
        return fn

    return decorate


def _describe(qualname, module):
    where = repr(qualname) if qualname else "the model itself"
    return f"{where} ({type(module).__module__}.{type(module).__qualname__})"


def find_converter(module, qualname):
    cls = type(module)
    for base in cls.__mro__:
        entry = _CONVERTERS.get(base)
        if entry is None:
            continue
        fn, methods = entry
        overridden = [m for m in methods if getattr(cls, m, None) is not getattr(base, m, None)]
        if overridden:
            raise InvalidArgumentError(
                f"cannot export layer {_describe(qualname, module)} to ONNX: it subclasses "
                f"{base.__qualname__} but overrides {', '.join(overridden)}, so the {base.__qualname__} "
                f"converter would not reproduce it; register one with "
                f"excite.onnx.register_converter({cls.__qualname__})"
            )
        return fn
    known = ", ".join(sorted(c.__qualname__ for c in _CONVERTERS))
    raise InvalidArgumentError(
        f"cannot export layer {_describe(qualname, module)} to ONNX: the exporter has no converter "
        f"for {cls.__qualname__}; it knows: {known}"
    )


class ExportContext:
    """What converters share: the graph builder, the export options, and recursion into children."""

    def __init__(self, builder, fold_batchnorm=False, dynamic_batch=True):
        self.builder = builder
        self.fold_batchnorm = fold_batchnorm
        self.dynamic_batch = dynamic_batch

    def call(self, module, qualname, x):
        return find_converter(module, qualname)(self, module, qualname, x)

    def child(self, module, qualname, name, x):
        """Export ``module.<name>`` applied to ``x``."""
        return self.call(getattr(module, name), join(qualname, name), x)

    def parameter(self, qualname, attr, tensor):
        """The initializer for ``tensor``, named by its state_dict key ``qualname.attr``."""
        return self.builder.parameter(join(qualname, attr), as_array(tensor))


def join(prefix, name):
    return f"{prefix}.{name}" if prefix else str(name)


def as_array(t):
    """The ndarray behind a parameter or buffer (None stays None)."""
    if t is None:
        return None
    return t.data if isinstance(t, Tensor) else np.asarray(t)
