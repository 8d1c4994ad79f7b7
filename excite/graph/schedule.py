"""Sub-batches: which stretches of a batched graph run a few images at a time.

A batch of 16 at 224² makes MobileNetV3-Large's first expand write 51 MB and the depthwise after it
read it back, far more than the caches hold, so both run at memory speed. Run through the same
layers a few images at a time, each layer's output is still in cache when the next reads it.
Late layers, whose images are small, gain from the whole batch (longer products per kernel call).

`sub_batches` cuts the graph into segments ``(start, stop, size)``: the nodes ``start..stop-1`` run
``size`` images at a time. A node's size is the largest divisor of the batch whose arrays (inputs and
output of that many images) fit in ``budget`` bytes, and sizes never shrink along a stretch. Where
the size grows, the cut moves later, up to the next change, to where the fewest bytes cross it (the
values a segment is handed and hands on are copied, so a cut after a block's projection is cheaper
than one inside the block). Only ops that treat every image on its own (`PER_IMAGE`) run in
sub-batches; any other node runs the whole batch.
"""
import dataclasses

import numpy as np

from .ir import Graph, Node, Value
from .passes.memory import nbytes

SUB_BATCH_BYTES = 4 << 20  # per-node arrays of a sub-batch: about what the caches of this class of machine hold
PER_IMAGE = frozenset(("conv2d", "se", "activation", "batch_norm", "add", "sub", "mul", "div",
                       "adaptive_avg_pool2d", "linear", "reshape"))


def sub_batches(graph, budget=None):
    """Segments ``[(start, stop, size), ...]`` covering ``graph.nodes`` in order (see the module doc), the
    size None where a segment runs the whole batch; ``budget`` defaults to `SUB_BATCH_BYTES`."""
    budget = SUB_BATCH_BYTES if budget is None else budget
    nodes = graph.nodes
    if len(graph.inputs) != 1 or not graph.inputs[0].shape or not nodes:
        return [(0, len(nodes), None)]
    batch = graph.inputs[0].shape[0]
    per_image = [_per_image(node, batch) for node in nodes]
    sizes = [_size(node, batch, budget) if ok else batch for node, ok in zip(nodes, per_image)]
    for i in range(len(sizes) - 2, -1, -1):  # sizes never shrink along a stretch of per-image nodes
        if per_image[i] and per_image[i + 1]:
            sizes[i] = min(sizes[i], sizes[i + 1])
    cost = crossing_bytes(graph)
    cuts = {0, len(nodes)}
    i = 1
    while i < len(nodes):
        if sizes[i] == sizes[i - 1]:
            i += 1
            continue
        if not (per_image[i - 1] and per_image[i]):  # a stretch ends or starts: cut exactly here
            cuts.add(i)
            i += 1
            continue
        end = next((k for k in range(i + 1, len(nodes)) if sizes[k] != sizes[i] or not per_image[k]), len(nodes))
        cut = min(range(i, end), key=lambda k: (cost[k], k))
        sizes[i:cut] = [sizes[i - 1]] * (cut - i)  # (the nodes before the cut run at the smaller size)
        cuts.add(cut)
        i = end
    bounds = sorted(cuts)
    segments = []
    for start, stop in zip(bounds, bounds[1:]):
        size = None if sizes[start] == batch else sizes[start]
        if segments and segments[-1][2] == size:
            segments[-1][1] = stop
        else:
            segments.append([start, stop, size])
    return [tuple(segment) for segment in segments]


def _size(node, batch, budget):
    arrays = [v for v in node.inputs if getattr(v, "kind", None) in ("input", "node")] + [node.output]
    per_image = sum(nbytes(v) for v in arrays) / batch
    return max((d for d in range(1, batch + 1) if batch % d == 0 and d * per_image <= budget), default=1)


def _per_image(node, batch):
    """The node computes each image from that image alone: a per-image op, every array input and the
    output batch-first, and constants that broadcast over the batch."""
    if node.op not in PER_IMAGE or (node.op == "batch_norm" and node.attrs.get("training")):
        return False
    if not node.output.shape or node.output.shape[0] != batch:
        return False
    for v in node.inputs:
        kind = getattr(v, "kind", None)
        if kind in ("input", "node"):
            if not v.shape or v.shape[0] != batch:
                return False
        elif node.op in ("add", "sub", "mul", "div"):  # a constant operand must broadcast over the batch
            data = v.data if kind else v
            if np.ndim(data) >= len(node.output.shape) and np.shape(data)[0] != 1:
                return False
    return True


def reads(node):
    """The values ``node`` reads: its inputs, and values among its attributes."""
    return [v for v in (*node.inputs, *node.attrs.values()) if isinstance(v, Value)]


def crossing(graph, start, stop):
    """(values made before node ``start``, the input included, that nodes ``start..stop-1`` read; values
    those nodes make that a later node reads or the graph returns): a segment's ins and outs."""
    inside = graph.nodes[start:stop]
    made_before = set(graph.inputs) | {node.output for node in graph.nodes[:start]}
    ins = list(dict.fromkeys(v for node in inside for v in reads(node) if v in made_before))
    read_after = {v for node in graph.nodes[stop:] for v in reads(node)} | set(graph.outputs)
    outs = [node.output for node in inside if node.output in read_after]
    return ins, outs


def crossing_bytes(graph):
    """For each node index i: the bytes of the values made before node i (the input included) that are
    read at or after it, or returned."""
    nodes = graph.nodes
    made = {v: -1 for v in graph.inputs}
    made.update({node.output: i for i, node in enumerate(nodes)})
    last = {}
    for i, node in enumerate(nodes):
        for v in reads(node):
            if v in made:
                last[v] = i
    for v in graph.outputs:
        if v in made:
            last[v] = len(nodes)
    total = [0] * len(nodes)
    for v, end in last.items():  # v crosses the cuts made+1 .. end
        for i in range(made[v] + 1, min(end, len(nodes) - 1) + 1):
            total[i] += nbytes(v)
    return total


def rebatched(graph, size):
    """A copy of ``graph`` for a batch of ``size``: input and node values whose first dimension is the
    batch get ``size`` there (and so do reshape targets); parameters and constants are shared. Right
    for the nodes `sub_batches` runs in sub-batches, which treat every image on its own."""
    batch = graph.inputs[0].shape[0]
    values = {}

    def value(v):
        if not isinstance(v, Value) or v.kind in ("parameter", "constant"):
            return v
        if v not in values:
            shape = (size, *v.shape[1:]) if v.shape and v.shape[0] == batch else v.shape
            values[v] = dataclasses.replace(v, shape=shape, producer=None)
        return values[v]

    small = Graph()
    small.inputs = [value(v) for v in graph.inputs]
    for node in graph.nodes:
        attrs = {k: value(a) for k, a in node.attrs.items()}
        if node.op == "reshape" and attrs["shape"] and attrs["shape"][0] == batch:
            attrs["shape"] = (size, *attrs["shape"][1:])
        copy = Node(node.name, node.op, [value(v) for v in node.inputs], attrs, node.scope, value(node.output))
        copy.output.producer = copy
        small.nodes.append(copy)
    small.outputs = [value(v) for v in graph.outputs]
    small.parameters, small.constants = graph.parameters, graph.constants
    small.output_structure = getattr(graph, "output_structure", None)
    return small
