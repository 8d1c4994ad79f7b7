"""Assembles an ONNX graph (nodes, initializers, shapes) from converter calls, then a ModelProto."""
from dataclasses import dataclass

import numpy as np

from ..errors import InvalidArgumentError

INSTALL_HINT = "install it with: pip install 'excite[onnx]'"


def import_onnx():
    """Import the optional ``onnx`` package or explain how to get it."""
    try:
        import onnx
    except ImportError as e:
        raise ImportError(f"exporting to ONNX needs the 'onnx' package; {INSTALL_HINT}") from e
    return onnx


@dataclass(frozen=True)
class Value:
    """A tensor flowing through the graph: its ONNX name and its shape for the example input."""

    name: str
    shape: tuple


class GraphBuilder:
    """Collects nodes and initializers under unique names.

    Parameters keep the name they are given (their state_dict key); every other name is made
    unique by a numeric suffix, so two converters can never collide.
    """

    def __init__(self, dtype=np.float32):
        self.dtype = np.dtype(dtype)
        self.nodes = []  # (op_type, inputs, outputs, attributes, node name)
        self.initializers = {}  # name -> ndarray, in insertion order
        self._names = set()
        self._by_identity = {}  # id(source array) -> initializer name, for shared parameters
        self._keep_alive = []  # holds the sources whose id() keys _by_identity

    def unique(self, hint):
        name = hint
        k = 1
        while name in self._names:
            k += 1
            name = f"{hint}_{k}"
        self._names.add(name)
        return name

    def parameter(self, name, array):
        """A weight as an initializer named ``name``; a tensor shared by two layers is stored once."""
        key = id(array)
        if key in self._by_identity:
            return self._by_identity[key]
        if name in self._names:
            raise InvalidArgumentError(f"cannot name the initializer of {name!r}: the name is already used by "
                                       f"another value of the graph")
        self._names.add(name)
        self.initializers[name] = np.ascontiguousarray(np.asarray(array), dtype=self.dtype)
        self._by_identity[key] = name
        self._keep_alive.append(array)
        return name

    def constant(self, hint, array, dtype=None):
        """A derived array (folded weights, Clip bounds, reshape targets) under a fresh name."""
        name = self.unique(hint)
        self.initializers[name] = np.ascontiguousarray(np.asarray(array, dtype=dtype or self.dtype))
        return name

    def node(self, op_type, inputs, shape, name, **attributes):
        """Append one node with a single output; returns that output as a Value of ``shape``."""
        out = self.unique(f"{name}/{op_type}" if name else op_type)
        self.nodes.append((op_type, list(inputs), [out], attributes, out))
        return Value(out, tuple(int(s) for s in shape))

    def rename_value(self, old, new):
        """Give a node output its public name (the graph output is called 'logits')."""
        self._names.add(new)
        self.nodes = [
            (op, [new if i == old else i for i in ins], [new if o == old else o for o in outs], attrs, nm)
            for op, ins, outs, attrs, nm in self.nodes
        ]

    def produced(self, name):
        return any(name in outs for _, _, outs, _, _ in self.nodes)

    def to_model(self, input_value, output_value, opset, dynamic_batch, producer_version, doc_string="", metadata=None):
        onnx = import_onnx()
        from onnx import helper

        elem = helper.np_dtype_to_tensor_dtype(self.dtype)

        def value_info(v):
            dims = list(v.shape)
            if dynamic_batch and dims:
                dims[0] = "batch"
            return helper.make_tensor_value_info(v.name, elem, dims)

        # filled in place: make_graph / make_model would copy every weight twice more
        model = onnx.ModelProto()
        opset_id = model.opset_import.add()
        opset_id.domain, opset_id.version = "", opset
        # the lowest IR version that can carry this opset, so older runtimes still load the file
        model.ir_version = helper.find_min_ir_version_for([helper.make_opsetid("", opset)])
        model.producer_name, model.producer_version, model.doc_string = "excite", producer_version, doc_string
        for key, value in (metadata or {}).items():  # metadata_props: the model's string key/values
            prop = model.metadata_props.add()
            prop.key, prop.value = key, value
        graph = model.graph
        graph.name = "excite"
        graph.input.append(value_info(input_value))
        graph.output.append(value_info(output_value))
        graph.node.extend(helper.make_node(op, ins, outs, name=nm, **attrs)
                          for op, ins, outs, attrs, nm in self.nodes)
        for name, array in self.initializers.items():
            tensor = graph.initializer.add()
            tensor.name = name
            tensor.data_type = helper.np_dtype_to_tensor_dtype(array.dtype)
            tensor.dims.extend(array.shape)
            tensor.raw_data = array.astype(array.dtype.newbyteorder("<"), copy=False).tobytes()
        return model

    def __repr__(self):
        return f"GraphBuilder({len(self.nodes)} nodes, {len(self.initializers)} initializers)"


def is_protobuf_too_large(nbytes):
    # protobuf refuses to serialise a message above 2 GiB; ONNX then needs external data files
    return nbytes >= 2**31 - 1 - 16 * 2**20
