"""`OnnxModel`: run an exported ONNX graph with onnxruntime as a NumPy-in, NumPy-out callable."""
import os

import numpy as np

from ..errors import CheckpointError, InvalidArgumentError, ShapeError, shape_str
from ..tensor import Tensor
from ._graph import INSTALL_HINT


def import_onnxruntime():
    """Import the optional ``onnxruntime`` package or explain how to get it."""
    try:
        import onnxruntime
    except ImportError as e:
        raise ImportError(f"running ONNX models needs the 'onnxruntime' package; {INSTALL_HINT}") from e
    return onnxruntime


class OnnxModel:
    """An ONNX model on onnxruntime's CPU provider: ``OnnxModel(path)(images) -> logits``.

    ``num_threads`` sets onnxruntime's intra-op threads (None: onnxruntime's default, one per
    core). The call takes an ``np.ndarray`` (or excite Tensor) of the graph's input shape, any
    batch size when the graph was exported with a dynamic batch, and returns an ``np.ndarray``.
    """

    def __init__(self, path, num_threads=None):
        ort = import_onnxruntime()
        self.path = os.fspath(path)
        if not os.path.isfile(self.path):
            raise FileNotFoundError(f"no ONNX model at {self.path!r}")
        if num_threads is not None and (isinstance(num_threads, bool) or not isinstance(num_threads, int)
                                        or num_threads < 1):
            raise InvalidArgumentError(f"OnnxModel: num_threads must be a positive int or None, got {num_threads!r}")
        options = ort.SessionOptions()
        options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
        if num_threads is not None:
            options.intra_op_num_threads = num_threads
            options.inter_op_num_threads = 1
        self.num_threads = num_threads
        try:
            self.session = ort.InferenceSession(self.path, sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as e:  # onnxruntime raises its own untyped errors for unreadable graphs
            raise CheckpointError(f"onnxruntime cannot load {self.path!r} as an ONNX model: {e}") from e
        inputs, outputs = self.session.get_inputs(), self.session.get_outputs()
        if len(inputs) != 1:
            raise CheckpointError(f"{self.path!r}: expected a graph with one input, got {len(inputs)}: "
                                  f"{[i.name for i in inputs]}")
        self.input_name = inputs[0].name
        # symbolic dims (such as 'batch') and unknown dims become None
        self.input_shape = tuple(d if isinstance(d, int) else None for d in inputs[0].shape)
        self.output_names = [o.name for o in outputs]

    def __call__(self, input):
        x = input.data if isinstance(input, Tensor) else np.asarray(input)
        if x.dtype.kind not in "fiu":
            raise InvalidArgumentError(f"OnnxModel expects a numeric array, got dtype {x.dtype}")
        x = np.ascontiguousarray(x, dtype=np.float32)
        expected = self.input_shape
        if x.ndim != len(expected) or any(e is not None and e != s for e, s in zip(expected, x.shape)):
            shown = "[" + ", ".join("N" if e is None else str(e) for e in expected) + "]"
            raise ShapeError(f"{os.path.basename(self.path)} expects input of shape {shown}, got "
                             f"{shape_str(x.shape)}")
        return self.session.run(self.output_names[:1], {self.input_name: x})[0]

    def __repr__(self):
        shown = "[" + ", ".join("N" if e is None else str(e) for e in self.input_shape) + "]"
        return f"OnnxModel({self.path!r}, input={self.input_name!r} {shown}, num_threads={self.num_threads})"


def load_onnx(path, num_threads=None):
    """Load an ONNX file for inference with onnxruntime; see `OnnxModel`."""
    return OnnxModel(path, num_threads=num_threads)
