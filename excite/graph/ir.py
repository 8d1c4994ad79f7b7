"""The graph IR: `Value`s flowing between `Node`s, each node named by the module path it came from.

A node is one operation: its ``op`` (``"conv2d"``, ``"batch_norm"``, ``"activation"``, ``"add"``,
``"se"``, ... or ``"function"`` for any other autograd Function), its input values, its attributes
(plain Python values and arrays), and the output value with its shape and dtype. A value is
produced by a node, or is the graph's input, a parameter/buffer of the model (named by its
``state_dict`` key, its array read when the graph is built) or a constant. Passes rewrite the
node list; `Graph.__str__` prints it as a table, one line per node, like ``torch.fx``'s
``graph.print_tabular()``.
"""
from dataclasses import dataclass, field

import numpy as np

from ..errors import InvalidArgumentError
from ..errors import shape_str


@dataclass(eq=False)
class Value:
    """An array in the graph. ``kind``: 'input', 'node' (a node's output), 'parameter' or 'constant'."""

    name: str
    shape: tuple
    dtype: np.dtype
    kind: str = "node"
    data: object = None  # the array of a parameter or constant
    producer: "Node" = None

    def __repr__(self):
        return f"%{self.name}"


@dataclass(eq=False)
class Node:
    """One operation. ``scope`` is the module path it ran in; ``output`` its result."""

    name: str
    op: str
    inputs: list
    attrs: dict = field(default_factory=dict)
    scope: str = ""
    output: Value = None

    @property
    def target(self):
        """What the node computes, for the printed table: the op, or the Function class for 'function'."""
        if self.op == "function":
            return self.attrs["function"].__name__
        if self.op == "activation":
            return f"activation[{self.attrs['activation']}]"
        return self.op


class Graph:
    """Nodes in execution order, the input values, and the output values.

    ``module_outputs`` maps a module call's qualified name (``features.3.block.2``) to the value it
    returned; ``visible`` lists torchvision's names of the nodes a feature extractor can return
    (see `excite.vision.models.feature_extraction`), in order, each with its value.
    """

    def __init__(self):
        self.nodes = []
        self.inputs = []
        self.outputs = []
        self.parameters = {}  # state_dict key -> Value
        self.constants = []
        self.module_outputs = {}
        self.visible = {}  # torchvision-style node name -> Value
        self._names = set()

    # ----- construction ------------------------------------------------------------------------
    def unique_name(self, hint):
        name = hint or "node"
        k = 0
        while name in self._names:
            k += 1
            name = f"{hint}_{k}"
        self._names.add(name)
        return name

    def add_input(self, name, shape, dtype):
        value = Value(self.unique_name(name), tuple(shape), np.dtype(dtype), kind="input")
        self.inputs.append(value)
        return value

    def parameter(self, key, array):
        value = self.parameters.get(key)
        if value is None:
            value = Value(key, tuple(array.shape), array.dtype, kind="parameter", data=array)
            self.parameters[key] = value
        return value

    def constant(self, hint, array):
        array = np.asarray(array)
        value = Value(self.unique_name(hint), tuple(array.shape), array.dtype, kind="constant", data=array)
        self.constants.append(value)
        return value

    def add_node(self, op, inputs, attrs, shape, dtype, name, scope=""):
        node = Node(self.unique_name(name), op, list(inputs), dict(attrs), scope)
        node.output = Value(node.name, tuple(shape), np.dtype(dtype), producer=node)
        self.nodes.append(node)
        return node

    # ----- queries -----------------------------------------------------------------------------
    def users(self):
        """value -> list of the nodes reading it (graph outputs count as a user ``None``)."""
        users = {}
        for node in self.nodes:
            for v in node.inputs:
                if isinstance(v, Value):
                    users.setdefault(v, []).append(node)
        for v in self.outputs:
            users.setdefault(v, []).append(None)
        return users

    def node(self, name):
        for node in self.nodes:
            if node.name == name:
                return node
        raise InvalidArgumentError(f"the graph has no node {name!r}")

    def replace_uses(self, old, new):
        """Every read of value ``old`` (by nodes, outputs and the name tables) reads ``new`` instead."""
        for node in self.nodes:
            node.inputs = [new if v is old else v for v in node.inputs]
            for key, attr in node.attrs.items():
                if attr is old:
                    node.attrs[key] = new
        self.outputs = [new if v is old else v for v in self.outputs]
        for table in (self.module_outputs, self.visible):
            for key, v in table.items():
                if v is old:
                    table[key] = new

    # ----- printing ----------------------------------------------------------------------------
    def rows(self):
        """The table `__str__` prints: (name, target, inputs, attributes, output shape) per node."""
        rows = [(v.name, "input", "", "", shape_str(v.shape)) for v in self.inputs]
        for node in self.nodes:
            args = ", ".join(_describe(v) for v in node.inputs)
            attrs = ", ".join(f"{k}={_short(v)}" for k, v in node.attrs.items() if k != "function")
            rows.append((node.name, node.target, args, attrs, shape_str(node.output.shape)))
        rows.append(("output", "output", ", ".join(_describe(v) for v in self.outputs), "", ""))
        return rows

    def __str__(self):
        header = ("name", "op", "inputs", "attributes", "shape")
        rows = [header] + self.rows()
        widths = [min(60, max(len(r[i]) for r in rows)) for i in range(4)]
        lines = []
        for r in rows:
            cells = [r[i][:widths[i]].ljust(widths[i]) for i in range(4)] + [r[4]]
            lines.append("  ".join(cells).rstrip())
        lines.insert(1, "  ".join("-" * w for w in widths) + "  -----")
        return "\n".join(lines)

    def __repr__(self):
        return f"Graph({len(self.nodes)} nodes, {len(self.parameters)} parameters)"


def _describe(v):
    if isinstance(v, Value):
        return v.name if v.kind != "constant" else f"const{shape_str(v.shape)}"
    return _short(v)


def _short(v):
    if isinstance(v, Value):
        return _describe(v)
    if isinstance(v, np.ndarray):
        return f"array{shape_str(v.shape)}"
    if isinstance(v, float):
        return f"{v:g}"
    text = repr(v)
    return text if len(text) <= 40 else text[:37] + "..."
