"""Fuse elementwise work into the node that produces its input: activations, and residual adds."""

EPILOGUE_OPS = ("conv2d", "linear")  # ops whose kernels apply an activation and a residual add on the way out


def fuse_activations(graph):
    """``activation(y)`` where ``y`` comes from a convolution or linear layer read by nothing else, and
    that has no activation or residual yet, becomes that node's ``activation`` attribute."""
    users = graph.users()
    fused = 0
    for act in list(graph.nodes):
        if act.op != "activation":
            continue
        (x,) = act.inputs
        producer = x.producer
        if (producer is None or producer.op not in EPILOGUE_OPS or users.get(x) != [act]
                or producer.attrs.get("activation") is not None or "residual" in producer.attrs):
            continue
        producer.attrs["activation"] = act.attrs["activation"]
        graph.replace_uses(act.output, producer.output)
        graph.nodes.remove(act)
        users = graph.users()
        fused += 1
    return fused


def fuse_residual_adds(graph):
    """``a + b`` where ``a`` comes from a convolution read by nothing else and ``b`` (of the same shape
    and dtype) is computed before that convolution becomes the convolution's ``residual`` input: its
    kernel adds ``b`` after the activation, as the add did."""
    users = graph.users()
    order = {node: i for i, node in enumerate(graph.nodes)}
    fused = 0
    for add in list(graph.nodes):
        if add.op != "add" or len(add.inputs) != 2:
            continue
        for a, b in (add.inputs, add.inputs[::-1]):
            conv = getattr(a, "producer", None)
            if (conv is None or conv.op != "conv2d" or users.get(a) != [add] or "residual" in conv.attrs
                    or not hasattr(b, "shape") or b.shape != a.shape or b.dtype != a.dtype
                    or (b.producer is not None and order[b.producer] > order[conv])):
                continue
            conv.attrs["residual"] = True
            conv.inputs.append(b)
            graph.replace_uses(add.output, conv.output)
            graph.nodes.remove(add)
            users = graph.users()
            order = {node: i for i, node in enumerate(graph.nodes)}
            fused += 1
            break
    return fused
