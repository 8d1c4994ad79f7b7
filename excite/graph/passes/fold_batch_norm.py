"""Fold eval-mode batch norm into the convolution before it: the conv's epilogue gets its scale and shift."""
import numpy as np

from ...kernels.norm import batch_norm_affine


def fold_batch_norm(graph):
    """``batch_norm(conv2d(x))`` with running statistics, where the batch norm is the convolution's only
    reader, becomes one ``conv2d`` node with ``scale`` / ``shift`` attributes (computed in float64, stored in
    the convolution's dtype; the conv bias folded into ``shift``). Returns the number of folds."""
    users = graph.users()
    folded = 0
    for bn in list(graph.nodes):
        if bn.op != "batch_norm" or bn.attrs["training"] or bn.attrs.get("activation") is not None:
            continue
        x, mean, var, weight, bias = bn.inputs
        conv = x.producer
        if (conv is None or conv.op != "conv2d" or users.get(x) != [bn] or "scale" in conv.attrs
                or conv.attrs.get("activation") is not None or mean is None or var is None):
            continue
        scale, shift, _ = batch_norm_affine(mean.data.astype(np.float64), var.data, _data(weight), _data(bias),
                                            bn.attrs["eps"])
        conv_bias = conv.inputs[2]
        if conv_bias is not None:
            shift = shift + conv_bias.data.astype(np.float64) * scale
        dtype = conv.output.dtype
        conv.attrs["scale"] = scale.astype(dtype)
        conv.attrs["shift"] = shift.astype(dtype)
        conv.attrs["folded"] = bn.name
        conv.inputs[2] = None
        graph.replace_uses(bn.output, conv.output)
        graph.nodes.remove(bn)
        folded += 1
    return folded


def _data(value):
    return None if value is None else value.data.astype(np.float64)
