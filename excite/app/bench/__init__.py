"""The benchmark: excite and its peers (PyTorch, onnxruntime) side by side in one run, reported as ratios.

`runner` drives the cases and times the engines in alternating bursts; `torch_peer` is the PyTorch
side, run in a process of its own so that excite never imports torch.
"""
from .runner import main, run, serve

__all__ = ["main", "run", "serve"]
