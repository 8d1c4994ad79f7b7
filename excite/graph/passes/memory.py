"""Buffer planning: give intermediate values shared buffers whose lifetimes do not overlap.

Like a compiler's register allocation over the node order: a value lives from the node that
writes it to the last node that reads it (to the end for graph outputs); a buffer freed by a
value's last read is handed to a later value that fits in it (best fit), so a network needs a
few buffers of the largest activations instead of one array per layer.
"""
from dataclasses import dataclass, field

import numpy as np


@dataclass
class MemoryPlan:
    """``slot_of[value]`` is the index of the buffer holding ``value``; ``slot_sizes[i]`` its size in bytes."""

    slot_of: dict = field(default_factory=dict)
    slot_sizes: list = field(default_factory=list)

    @property
    def total_bytes(self):
        return sum(self.slot_sizes)


def nbytes(value):
    return int(np.prod(value.shape, dtype=np.int64)) * value.dtype.itemsize


VIEW_OPS = ("reshape", "function")  # ops whose result may be a view of an input's memory


def plan_memory(graph, wanted, keep=None):
    """A `MemoryPlan` for the node outputs in ``wanted`` (values the executor writes into buffers it
    owns); a value's buffer is never one that an input of the same node still occupies, and a value
    another may be a view of (`VIEW_OPS`) lives as long as that view. ``keep`` maps values to a node
    index they must live through even if nothing reads them there."""
    last_read = dict(keep or {})
    for i, node in enumerate(graph.nodes):
        for v in node.inputs:
            if hasattr(v, "producer"):
                last_read[v] = max(i, last_read.get(v, i))
    for v in graph.outputs:
        last_read[v] = len(graph.nodes)
    for node in reversed(graph.nodes):  # a view's reads are reads of the memory it views
        if node.op in VIEW_OPS and node.output in last_read:
            for v in node.inputs:
                if hasattr(v, "producer"):
                    last_read[v] = max(last_read.get(v, 0), last_read[node.output])
    plan = MemoryPlan()
    free = []  # slot indices
    released_at = {}  # node index -> slots freed after it
    for i, node in enumerate(graph.nodes):
        value = node.output
        if value in wanted:
            size = nbytes(value)
            fits = [s for s in free if plan.slot_sizes[s] >= size]
            if fits:
                slot = min(fits, key=lambda s: plan.slot_sizes[s])
                free.remove(slot)
            elif free:  # grow the largest free buffer rather than add one
                slot = max(free, key=lambda s: plan.slot_sizes[s])
                free.remove(slot)
                plan.slot_sizes[slot] = size
            else:
                slot = len(plan.slot_sizes)
                plan.slot_sizes.append(size)
            plan.slot_of[value] = slot
            end = last_read.get(value, i)
            released_at.setdefault(end, []).append(slot)
        free.extend(released_at.pop(i, ()))
    return plan
