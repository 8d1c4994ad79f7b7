"""Drop nodes whose results nothing reads."""


def eliminate_dead_code(graph):
    """Remove every node whose output neither a later node nor the graph's outputs read (the graph's
    ops have no side effects in inference). Returns the number removed."""
    live = set(graph.outputs)
    kept = []
    for node in reversed(graph.nodes):
        if node.output in live:
            kept.append(node)
            live.update(v for v in node.inputs if hasattr(v, "producer"))
    removed = len(graph.nodes) - len(kept)
    graph.nodes = kept[::-1]
    return removed
