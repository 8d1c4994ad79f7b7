"""Graph capture: run a module once on an example input and record every Function it applies.

Tracing goes through the same Functions the eager engine runs (`watch`), so anything that runs
eagerly can be captured. Blocks that have a fused eager path (Conv2dNormActivation,
SqueezeExcitation) run their layers one by one during a capture, so the graph holds the primitive
ops and the passes decide what to fuse. Nodes are named by the module path they ran in: the
output of a layer is named by the layer (``features.0.0``), a function called in a module's
forward by the module and torch's function name (``features.3.add``). The torchvision-visible
names (`Graph.visible`) follow torchvision's feature-extraction rules: layers of ``excite.nn`` and
the blocks torchvision keeps whole (``Conv2dNormActivation``, ``SqueezeExcitation``,
``StochasticDepth``) are leaves.
"""
import inspect

import numpy as np

from ..autograd.grad_mode import no_grad
from ..errors import ExciteError, InvalidArgumentError, shape_str
from ..kernels import buffers
from ..tensor import Tensor
from . import ops
from .ir import Graph
from .watch import Watcher, watching


def capture(model: "Module", example_input, training: bool = False) -> Graph:
    """The `Graph` of ``model`` applied to ``example_input`` (a Tensor or array, or a tuple of them).

    The model runs once, in eval mode unless ``training`` (its modes, buffers and the random state
    are restored afterwards), without recording autograd history. The eager buffer pool's free blocks
    are dropped after that run: they hold its activations (868 MB for MobileNetV3-Large at batch 16),
    which nothing captured reads again.
    """
    from .. import nn
    from ..random import get_rng_state, set_rng_state

    if not isinstance(model, nn.Module):
        raise InvalidArgumentError(f"capture expects an excite.nn.Module, got {type(model).__name__}")
    inputs = example_input if isinstance(example_input, tuple) else (example_input,)
    inputs = tuple(_as_tensor(x) for x in inputs)
    modes = [(m, m.training) for m in model.modules()]
    saved = {k: v.data.copy() for k, v in model.state_dict(keep_vars=True).items()} if training else None
    rng = get_rng_state()
    tracer = _Tracer(model)
    graph = tracer.graph
    names = _argument_names(model, len(inputs))
    for name, x in zip(names, inputs):
        tracer.bind(x, graph.add_input(tracer.namer.unique(name), x.shape, x.dtype))
        graph.visible[graph.inputs[-1].name] = graph.inputs[-1]
    model.train(training)
    try:
        with no_grad(), watching(tracer):
            output = model(*inputs)
    finally:
        for m, mode in modes:
            m.training = mode
        set_rng_state(rng)
        if saved is not None:
            for k, v in model.state_dict(keep_vars=True).items():
                v.data[...] = saved[k]
    graph.outputs, graph.output_structure = tracer.outputs(output)
    del output, tracer  # the run's arrays: their pooled blocks are free now
    buffers.clear()
    return graph


def _as_tensor(x):
    if isinstance(x, Tensor):
        return x
    if isinstance(x, np.ndarray):
        return Tensor(x)
    raise InvalidArgumentError(f"an example input must be a Tensor or a NumPy array, got {type(x).__name__}")


def _argument_names(model, count):
    """The forward's parameter names (torch.fx names the input placeholders by them)."""
    try:
        params = [p.name for p in inspect.signature(model.forward).parameters.values()
                  if p.kind in (p.POSITIONAL_ONLY, p.POSITIONAL_OR_KEYWORD)]
    except (TypeError, ValueError):
        params = []
    return (params + [f"input_{i}" for i in range(count)])[:count] if len(params) >= count else [
        f"input_{i}" for i in range(count)]


def is_leaf(module):
    """torchvision's feature-extraction leaves: torch.nn's layers and torchvision.ops' blocks."""
    from ..nn import ConvNormActivation, ModuleList, Sequential

    if not type(module).__module__.startswith("excite.nn"):
        return False
    return isinstance(module, ConvNormActivation) or not isinstance(module, (Sequential, ModuleList))


def _names_its_output(module):
    """A layer (not a block of layers) whose output node is named after it."""
    from ..nn import ModuleList, Sequential

    return type(module).__module__.startswith("excite.nn") and not isinstance(module, (Sequential, ModuleList))


class Namer:
    """torchvision's node names for what a module's forward does, event by event.

    A call of a leaf module that is not inside another leaf is named by the module's qualified
    name; a Function applied outside every leaf by the module it ran in and torch's function name
    (``features.3.add``); the input by the forward's argument name. A repeated name gets ``_1``,
    ``_2``, ... as torch.fx does. `capture` and feature extraction's taps share this, so both see
    the same names.
    """

    def __init__(self, model):
        self.module_names = {}
        for name, m in model.named_modules():
            self.module_names.setdefault(id(m), name)
        self.scope = [""]
        self.leaf_depth = 0
        self.used = set()

    def unique(self, base):
        name, k = base, 0
        while name in self.used:
            k += 1
            name = f"{base}_{k}"
        self.used.add(name)
        return name

    def enter(self, module):
        """(qualified name, is a leaf, is the outermost leaf) as ``module``'s call begins."""
        name = self.module_names.get(id(module))
        if name is None:  # a module made inside forward: scoped under the caller
            name = f"{self.scope[-1]}.{type(module).__name__.lower()}".lstrip(".")
        leaf = is_leaf(module)
        outermost = leaf and self.leaf_depth == 0
        self.scope.append(name)
        self.leaf_depth += leaf
        return name, leaf, outermost

    def leave(self, name, leaf, outermost):
        """The visible name of the call that ends (None unless it was the outermost leaf)."""
        self.scope.pop()
        self.leaf_depth -= leaf
        return self.unique(name) if outermost else None

    def function(self, function, args, kwargs):
        """(visible name or None, the node name hint) of a Function applied now."""
        scope = self.scope[-1]
        hint = ops.torch_name(function, args, kwargs)
        base = f"{scope}.{hint}" if scope else hint
        return (self.unique(base) if self.leaf_depth == 0 else None), base


class _Tracer(Watcher):
    plain = True

    def __init__(self, model):
        self.graph = Graph()
        self.namer = Namer(model)
        self.parameters = {}
        for key, t in list(model.named_parameters()) + list(model.named_buffers()):
            self.parameters.setdefault(id(t), key)
        self.values = {}  # id(Tensor) -> (Tensor, Value); the Tensor is kept so its id is not reused
        self.arrays = {}  # id(ndarray) -> Value: a detached alias of a traced tensor
        self.provisional = set()  # nodes still named by scope and function

    # ----- values -----------------------------------------------------------------------------
    def bind(self, tensor, value):
        self.values[id(tensor)] = (tensor, value)
        self.arrays[id(tensor.data)] = (tensor.data, value)

    def resolve(self, arg):
        if not isinstance(arg, Tensor):
            return arg
        found = self.values.get(id(arg))
        if found is not None and found[0] is arg:
            return found[1]
        key = self.parameters.get(id(arg))
        if key is not None:
            return self.graph.parameter(key, arg.data)
        alias = self.arrays.get(id(arg.data))
        if alias is not None and alias[0] is arg.data:
            return alias[1]
        return self.graph.constant("constant", arg.data.copy())

    # ----- what the watcher sees ------------------------------------------------------------------
    def call_module(self, module, args, kwargs):
        name, leaf, outermost = self.namer.enter(module)
        first = len(self.graph.nodes)
        try:
            output = module._call_impl(*args, **kwargs)
        except ExciteError as e:
            if getattr(e, "layer", None) is not None:
                raise
            # name the innermost layer the error came from: a model has hundreds of convolutions
            located = type(e)(f"layer {name!r} ({type(module).__name__}): {e}")
            located.layer = name
            raise located from e
        finally:
            visible = self.namer.leave(name, leaf, outermost)
        value = self.resolve(output) if isinstance(output, Tensor) else None
        if value is not None:
            self.graph.module_outputs.setdefault(name, value)
            node = value.producer
            if (_names_its_output(module) and node is not None and node in self.provisional
                    and node in self.graph.nodes[first:]):
                self._rename(node, name)
            if visible is not None:
                self.graph.visible[visible] = value
        return output

    def applied(self, function, args, kwargs, result):
        resolved = [self.resolve(a) for a in args]
        op, inputs, attrs = ops.normalize(function, resolved, {k: self.resolve(v) for k, v in kwargs.items()})
        visible, hint = self.namer.function(function, args, kwargs)
        node = self.graph.add_node(op, inputs, attrs, result.shape, result.dtype, visible or hint,
                                   self.namer.scope[-1])
        self.provisional.add(node)
        self.bind(result, node.output)
        if visible is not None:
            self.graph.visible[visible] = node.output

    def _rename(self, node, name):
        old = node.name
        node.name = node.output.name = self.graph.unique_name(name)
        self.provisional.discard(node)
        if old in self.graph.visible:
            self.graph.visible = {node.name if k == old else k: v for k, v in self.graph.visible.items()}

    def outputs(self, output):
        """(output values, structure): structure is None for one tensor, else a tuple or the dict's keys."""
        if isinstance(output, Tensor):
            return [self._output(output)], None
        if isinstance(output, (tuple, list)):
            return [self._output(t) for t in output], ("tuple", len(output))
        if isinstance(output, dict):
            return [self._output(t) for t in output.values()], ("dict", tuple(output))
        raise InvalidArgumentError(f"a captured model must return a Tensor, a tuple or a dict of Tensors, got "
                                   f"{type(output).__name__}")

    def _output(self, t):
        if not isinstance(t, Tensor):
            raise InvalidArgumentError(f"a captured model's outputs must be Tensors, got {type(t).__name__}")
        value = self.resolve(t)
        if value.kind == "constant":
            raise InvalidArgumentError(
                f"the model returned a tensor of shape {shape_str(t.shape)} that does not depend on its input "
                f"through excite's operations; it cannot be captured")
        return value
