"""Recognise the Squeeze-and-Excitation block: pool -> 1x1 conv -> act -> 1x1 conv -> gate -> multiply."""


def _unit_conv(node):
    a = node.attrs
    return (node.op == "conv2d" and a["stride"] == (1, 1) and a["padding"] == (0, 0) and a["dilation"] == (1, 1)
            and a["groups"] == 1 and node.inputs[1].shape[2:] == (1, 1) and "scale" not in a and "residual" not in a)


def fuse_squeeze_excitation(graph):
    """``x * gate(fc2(act(fc1(adaptive_avg_pool2d(x, 1)))))`` — the activations already fused into the two
    1x1 convolutions — becomes one ``se`` node (inputs x, fc1 weight and bias, fc2 weight and bias) when
    the intermediate results are read by nothing else. Returns the number of blocks fused."""
    users = graph.users()
    fused = 0
    for mul in list(graph.nodes):
        if mul.op != "mul" or len(mul.inputs) != 2:
            continue
        for gate, x in (mul.inputs, mul.inputs[::-1]):
            fc2 = getattr(gate, "producer", None)
            if fc2 is None or not _unit_conv(fc2) or users.get(gate) != [mul]:
                continue
            hidden = fc2.inputs[0]
            fc1 = hidden.producer
            if fc1 is None or not _unit_conv(fc1) or users.get(hidden) != [fc2]:
                continue
            pooled = fc1.inputs[0]
            pool = pooled.producer
            if (pool is None or pool.op != "adaptive_avg_pool2d" or pool.inputs[0] is not x
                    or pool.attrs["output_size"] not in (1, (1, 1)) or users.get(pooled) != [fc1]
                    or len(x.shape) != 4 or gate.shape != (x.shape[0], x.shape[1], 1, 1)):
                continue
            mul.op = "se"
            mul.inputs = [x, fc1.inputs[1], fc1.inputs[2], fc2.inputs[1], fc2.inputs[2]]
            mul.attrs = dict(activation=fc1.attrs.get("activation"), scale_activation=fc2.attrs.get("activation"))
            for node in (pool, fc1, fc2):
                graph.nodes.remove(node)
            users = graph.users()
            fused += 1
            break
    return fused
