"""A model's layer table: output shapes, parameter counts and multiply-adds (`excite info`)."""
import dataclasses

import numpy as np


@dataclasses.dataclass
class LayerRow:
    name: str  # dotted module path ("" is the whole model)
    kind: str  # class name
    depth: int
    output_shape: tuple  # None if the module did not run
    params: int  # of the whole subtree
    macs: int  # of the whole subtree


@dataclasses.dataclass
class Summary:
    rows: list
    input_shape: tuple
    total_params: int
    trainable_params: int
    total_macs: int


def module_macs(module, output_shape):
    """Multiply-adds of one call of a Conv2d or Linear producing ``output_shape``, else 0.

    These are the only layers torchvision counts in its weights' "GFLOPS" (which are MACs);
    normalisation, activations and pooling are left out, as there.
    """
    from .. import nn

    out_elements = int(np.prod(output_shape))
    if isinstance(module, nn.Conv2d):
        kh, kw = module.kernel_size
        return out_elements * (module.in_channels // module.groups) * kh * kw
    if isinstance(module, nn.Linear):
        return out_elements * module.in_features
    return 0


def summarize(model, image_size=224, batch_size=1, in_channels=3):
    """Run one forward pass on zeros and record every module's output shape, parameters and MACs."""
    from ..autograd import no_grad
    from ..tensor import Tensor

    named = list(model.named_modules())
    shapes, own_macs, handles = {}, {}, []
    for name, module in named:
        def hook(mod, args, output, name=name):
            shape = tuple(output.shape) if hasattr(output, "shape") else None
            shapes[name] = shape
            if shape is not None:
                own_macs[name] = own_macs.get(name, 0) + module_macs(mod, shape)
        handles.append(module.register_forward_hook(hook))
    input_shape = (batch_size, in_channels, image_size, image_size)
    was_training = model.training
    model.eval()
    try:
        with no_grad():
            model(Tensor(np.zeros(input_shape, dtype=np.float32)))
    finally:
        for h in handles:
            h.remove()
        model.train(was_training)

    subtree_macs = {}
    for name, macs in own_macs.items():
        # credit every enclosing module too: "a.b.c" adds to "a.b", "a" and the model ("")
        parts = name.split(".") if name else []
        for i in range(len(parts) + 1):
            prefix = ".".join(parts[:i])
            subtree_macs[prefix] = subtree_macs.get(prefix, 0) + macs
    rows = []
    for name, module in named:
        params = sum(int(np.prod(p.shape)) for p in module.parameters())
        rows.append(LayerRow(name, type(module).__name__, name.count(".") + 1 if name else 0, shapes.get(name),
                             params, subtree_macs.get(name, 0)))
    total = sum(int(np.prod(p.shape)) for p in model.parameters())
    trainable = sum(int(np.prod(p.shape)) for p in model.parameters() if p.requires_grad)
    return Summary(rows, input_shape, total, trainable, subtree_macs.get("", 0))


def _human(n):
    for unit, scale in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if n >= scale:
            return f"{n / scale:.2f} {unit}"
    return str(n)


def format_summary(summary, depth=3, model_name=None):
    """The table as text, showing modules down to ``depth`` levels (deeper ones count in their parent)."""
    rows = [r for r in summary.rows if 1 <= r.depth <= depth]
    header = ("Layer (type)", "Output shape", "Params", "MACs")
    body = []
    for r in rows:
        label = "  " * (r.depth - 1) + f"{r.name.rsplit('.', 1)[-1]} ({r.kind})"
        shape = "[" + ", ".join(str(s) for s in r.output_shape) + "]" if r.output_shape else "-"
        body.append((label, shape, f"{r.params:,}", f"{r.macs:,}" if r.macs else "-"))
    widths = [max(len(header[i]), *(len(b[i]) for b in body)) if body else len(header[i]) for i in range(4)]

    def line(cells):
        return f"{cells[0]:<{widths[0]}}  {cells[1]:<{widths[1]}}  {cells[2]:>{widths[2]}}  {cells[3]:>{widths[3]}}"

    rule = "-" * len(line(header))
    out = [line(header), rule] + [line(b) for b in body] + [rule]
    shape = "[" + ", ".join(str(s) for s in summary.input_shape) + "]"
    out.append(f"{model_name + ': ' if model_name else ''}input {shape}")
    out.append(f"Total params: {summary.total_params:,}  (trainable: {summary.trainable_params:,})")
    out.append(f"Total MACs: {summary.total_macs:,}  ({_human(summary.total_macs)}; Conv2d and Linear multiply-adds, "
               "as torchvision's GFLOPS)")
    return "\n".join(out)


def summary_json(summary, depth=None):
    rows = [dataclasses.asdict(r) for r in summary.rows if depth is None or r.depth <= depth]
    return dict(input_shape=list(summary.input_shape), total_params=summary.total_params,
                trainable_params=summary.trainable_params, total_macs=summary.total_macs, layers=rows)
