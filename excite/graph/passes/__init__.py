"""Passes over the graph IR, each a small function ``pass(graph) -> graph`` that rewrites it in place.

`optimize` runs them in the order the executor wants: fold eval batch norm into convolutions,
fuse activations into their producers, fuse residual adds into the convolution before them,
recognise Squeeze-and-Excitation blocks, drop dead nodes.
"""
from .dead_code import eliminate_dead_code
from .fold_batch_norm import fold_batch_norm
from .fuse import fuse_activations, fuse_residual_adds
from .squeeze_excitation import fuse_squeeze_excitation

PIPELINE = (fold_batch_norm, fuse_activations, fuse_squeeze_excitation, fuse_residual_adds, eliminate_dead_code)


def optimize(graph, passes=PIPELINE):
    """Run ``passes`` in order on ``graph`` (in place); returns the graph."""
    for run in passes:
        run(graph)
    return graph


__all__ = ["optimize", "PIPELINE", "fold_batch_norm", "fuse_activations", "fuse_residual_adds",
           "fuse_squeeze_excitation", "eliminate_dead_code"]
