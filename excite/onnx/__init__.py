"""Export excite models to ONNX (lowered from the captured graph) and run ONNX graphs with onnxruntime
(optional extra: excite[onnx])."""
from ._lower import register_op
from .exporter import INPUT_NAME, OUTPUT_NAME, export
from .runtime import OnnxModel, load_onnx

__all__ = ["export", "register_op", "OnnxModel", "load_onnx", "INPUT_NAME", "OUTPUT_NAME"]
