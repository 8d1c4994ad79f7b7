"""The benchmark: excite and the engines users pick instead (torch eager, channels-last, TorchScript,
onnxruntime, OpenVINO) side by side in one run, reported as ratios.

`runner` drives the cases; `protocol` times engines in alternating bursts and speaks to the peer
processes; `peers` is the onnxruntime and OpenVINO side, and the PyTorch side is the source tree's
`benchmarks/torch_peer.py` (outside the package, so nothing installed with excite imports torch); each
runs in a process of its own.
"""
from .protocol import serve
from .runner import main, run

__all__ = ["main", "run", "serve"]
