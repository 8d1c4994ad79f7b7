"""The benchmark: excite and the engines users pick instead (torch eager, channels-last, TorchScript,
onnxruntime, OpenVINO) side by side in one run, reported as ratios.

`runner` drives the cases; `protocol` times engines in alternating bursts and speaks to the peer
processes; `torch_peer` is the PyTorch side and `peers` the onnxruntime and OpenVINO sides, each
run in a process of its own so that excite never imports torch.
"""
from .protocol import serve
from .runner import main, run

__all__ = ["main", "run", "serve"]
