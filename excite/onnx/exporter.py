"""`export`: write an excite model as an ONNX graph, lowered from its captured graph (`excite.graph`)."""
from typing import Dict, Optional, Union

import numpy as np

from ..errors import InvalidArgumentError, shape_str
from ..tensor import Tensor
from ._graph import GraphBuilder, Value, import_onnx, is_protobuf_too_large

INPUT_NAME = "input"
OUTPUT_NAME = "logits"
MIN_OPSET = 14  # HardSwish first appears in opset 14


def export(model: "Module", example_input, path: Union[str, "os.PathLike"], opset: int = 17,
           dynamic_batch: bool = True, fold_batchnorm: bool = False, metadata: Optional[Dict[str, str]] = None):
    """Write ``model`` to ``path`` as an ONNX graph; returns the ``onnx.ModelProto`` written.

    The graph computes the model's inference (eval-mode) forward whatever ``model.training``
    says, like ``torch.onnx.export``'s default: BatchNorm uses its running statistics and
    Dropout / StochasticDepth disappear. The model runs once on ``example_input`` in eval mode
    (`excite.graph.capture`), and its mode, parameters and buffers are left as they were.

    The graph has one float32 input named ``'input'`` of the shape of ``example_input`` (its
    first dim named ``'batch'`` and free when ``dynamic_batch``) and one output named
    ``'logits'``. Weights are stored in float32 as initializers named by their state_dict keys
    (``features.0.0.weight``, ``features.0.1.running_mean``, ...). With ``fold_batchnorm=True``
    each convolution whose output only a BatchNorm reads becomes a single Conv whose
    initializers are named ``<conv>.weight_bn_folded`` / ``<conv>.bias_bn_folded``
    (`excite.graph.passes.fold_batch_norm`); by default BatchNormalization nodes are kept, since
    onnxruntime folds them itself when it loads a graph.

    Every op of the captured graph is lowered to ONNX nodes named by the module path it came from;
    a Function the exporter does not know raises ``InvalidArgumentError`` naming the node (give it a
    lowering with ``excite.onnx.register_op``). The file passes ``onnx.checker.check_model`` and is
    written atomically.

    ``metadata`` (a dict of str -> str, e.g. class names and preprocessing) fills the model's
    ``metadata_props``, which onnxruntime reads back as ``session.get_modelmeta().custom_metadata_map``.
    """
    onnx = import_onnx()
    from .. import __version__
    from ..graph import capture
    from ..graph.passes import eliminate_dead_code, fold_batch_norm
    from ..nn import Module
    from ._lower import LoweringContext

    if not isinstance(model, Module):
        raise InvalidArgumentError(f"export: model must be an excite.nn.Module, got {type(model).__name__}")
    max_opset = onnx.defs.onnx_opset_version()
    if isinstance(opset, bool) or not isinstance(opset, (int, np.integer)) or not MIN_OPSET <= opset <= max_opset:
        raise InvalidArgumentError(f"export: opset must be an int in [{MIN_OPSET}, {max_opset}], got {opset!r}")
    if metadata is not None and not (isinstance(metadata, dict) and all(
            isinstance(k, str) and isinstance(v, str) for k, v in metadata.items())):
        raise InvalidArgumentError(f"export: metadata must be a dict of str -> str, got {metadata!r:.200}")
    example = example_input.data if isinstance(example_input, Tensor) else np.asarray(example_input)
    if example.dtype.kind != "f" or example.ndim < 1:
        raise InvalidArgumentError(f"export: example_input must be a floating-point tensor such as [1, 3, H, W], "
                                   f"got dtype {example.dtype} and shape {shape_str(example.shape)}")

    graph = capture(model, example.astype(np.float32, copy=False))
    if fold_batchnorm:
        fold_batch_norm(graph)
    eliminate_dead_code(graph)
    if len(graph.outputs) != 1:
        raise InvalidArgumentError(f"export: the model returns {len(graph.outputs)} tensors; the ONNX graph has "
                                   f"one output, '{OUTPUT_NAME}'")
    builder = GraphBuilder(np.float32)
    builder.unique(INPUT_NAME)
    builder.unique(OUTPUT_NAME)
    source = Value(INPUT_NAME, tuple(int(s) for s in example.shape))
    context = LoweringContext(builder, {graph.inputs[0]: INPUT_NAME}, bool(dynamic_batch), int(opset))
    for node in graph.nodes:
        context.lower(node)
    result = Value(context.name(graph.outputs[0]), graph.outputs[0].shape)
    if builder.produced(result.name):
        builder.rename_value(result.name, OUTPUT_NAME)
    else:  # the whole model is the identity
        builder.nodes.append(("Identity", [result.name], [OUTPUT_NAME], {}, OUTPUT_NAME))
    output = Value(OUTPUT_NAME, result.shape)

    nbytes = sum(a.nbytes for a in builder.initializers.values())
    if is_protobuf_too_large(nbytes):
        raise InvalidArgumentError(f"export: the model's weights take {nbytes / 2**30:.2f} GiB, above the 2 GiB a "
                                   f"single ONNX file can hold; external weight files are not supported")
    doc = (f"{type(model).__name__} exported by excite {__version__}: input '{INPUT_NAME}' float32 "
           f"{_dims(source.shape, dynamic_batch)}, output '{OUTPUT_NAME}' {_dims(output.shape, dynamic_batch)}")
    props = {"excite.model_class": type(model).__name__, "excite.fold_batchnorm": str(bool(fold_batchnorm))}
    proto = builder.to_model(source, output, int(opset), dynamic_batch, __version__, doc,
                             metadata={**props, **(metadata or {})})
    data = proto.SerializeToString()
    onnx.checker.check_model(data, full_check=True)
    _atomic_write(path, data)
    return proto


def _dims(shape, dynamic_batch):
    dims = [str(s) for s in shape]
    if dynamic_batch and dims:
        dims[0] = "batch"
    return "[" + ", ".join(dims) + "]"


def _atomic_write(path, data):
    """Readers never see half a model: written beside ``path``, then renamed (`excite.io` does it for every save)."""
    from ..io._files import atomic_write

    with atomic_write(path) as tmp, open(tmp, "wb") as f:
        f.write(data)
