"""Export excite models to ONNX and run ONNX graphs with onnxruntime (optional extra: excite[onnx])."""
from ._registry import register_converter
from .exporter import INPUT_NAME, OUTPUT_NAME, export
from .runtime import OnnxModel, load_onnx

__all__ = ["export", "register_converter", "OnnxModel", "load_onnx", "INPUT_NAME", "OUTPUT_NAME"]
