"""The graph compiler: capture a Module into a small IR, rewrite it with passes, run it compiled.

`capture` records a module's ops on an example input (`ir.Graph`, printable as a table); the
passes in `passes` fold batch norm, fuse activations, residual adds and the SE block, and drop
dead nodes; `executor.CompiledModel` (built by ``excite.compile``) runs the planned kernel calls
on reused buffers. ONNX export and feature extraction are built on the same graph.
"""
from .capture import capture
from .ir import Graph, Node, Value

__all__ = ["capture", "Graph", "Node", "Value"]
