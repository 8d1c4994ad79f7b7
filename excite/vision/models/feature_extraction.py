"""torchvision's feature extraction on excite's graph: `get_graph_node_names`, `create_feature_extractor`.

Node names are torchvision's (`excite.graph.capture.Namer`): ``features.3.block.1`` for a layer,
``features.3.add`` for a function called in a block's forward, ``x`` for the input. A feature
extractor runs the model eagerly — autograd, training-mode batch norm, dropout and stochastic
depth all behave as in the model — and returns the requested intermediate tensors as a dict,
stopping the forward pass once it has them all; ``excite.compile(extractor, x)`` compiles the
graph pruned to those outputs for inference.
"""
import numpy as np

from ... import nn
from ...errors import InvalidArgumentError
from ...graph.capture import Namer, _argument_names, capture
from ...graph.watch import Watcher, watching
from ...tensor import Tensor

__all__ = ["create_feature_extractor", "get_graph_node_names"]

DEFAULT_EXAMPLE_SHAPE = (1, 3, 224, 224)


def _example(model, example_input):
    if example_input is not None:
        return example_input
    dtype = next((p.dtype for p in model.parameters()), np.float32)
    return np.zeros(DEFAULT_EXAMPLE_SHAPE, dtype)


def get_graph_node_names(model, tracer_kwargs=None, suppress_diff_warning=False, concrete_args=None,
                         example_input=None):
    """(train-mode names, eval-mode names) of the nodes a feature extractor of ``model`` can return, in order.

    As torchvision's, except that excite traces by running the model once per mode on
    ``example_input`` (default zeros of shape ``[1, 3, 224, 224]``); the model's modes, buffers and
    the random state are left as they were. ``tracer_kwargs`` and ``concrete_args`` (torch.fx options)
    are accepted for compatibility and must be None.
    """
    _no_tracer_options(tracer_kwargs, concrete_args)
    example = _example(model, example_input)
    array = example.data if isinstance(example, Tensor) else np.asarray(example)
    # train mode with a batch of one can leave batch norm one value per channel: names do not depend on it
    batch = np.concatenate([array, array]) if array.ndim and array.shape[0] == 1 else array
    train = list(capture(model, batch, training=True).visible)
    evaluation = list(capture(model, example, training=False).visible)
    return train, evaluation


def create_feature_extractor(model, return_nodes=None, train_return_nodes=None, eval_return_nodes=None,
                             tracer_kwargs=None, suppress_diff_warning=False, concrete_args=None,
                             example_input=None):
    """A module whose forward returns ``{name: tensor}`` for the requested nodes of ``model`` (torchvision's API).

    ``return_nodes`` is a list of node names or a dict ``{node name: output name}``; a name may also
    be a prefix ending at a ``.`` (``"features.3"``), which selects the last node inside it. Use
    ``train_return_nodes`` and ``eval_return_nodes`` together instead when the two modes differ.
    Unknown names raise ``InvalidArgumentError`` (a ``ValueError``, as torchvision's) listing the
    valid ones. The extractor shares the model's parameters; ``example_input`` is as in
    `get_graph_node_names`.
    """
    _no_tracer_options(tracer_kwargs, concrete_args)
    if all(arg is None for arg in (return_nodes, train_return_nodes, eval_return_nodes)):
        raise InvalidArgumentError("Either `return_nodes` or `train_return_nodes` and `eval_return_nodes` together, "
                                   "should be specified")
    if (train_return_nodes is None) ^ (eval_return_nodes is None):
        raise InvalidArgumentError("If any of `train_return_nodes` and `eval_return_nodes` are specified, then both "
                                   "should be specified")
    if not ((return_nodes is None) ^ (train_return_nodes is None)):
        raise InvalidArgumentError("If `train_return_nodes` and `eval_return_nodes` are specified, then both should "
                                   "be specified")
    if train_return_nodes is None:
        train_return_nodes = eval_return_nodes = return_nodes
    train_names, eval_names = get_graph_node_names(model, example_input=example_input)
    resolved = {"train": _resolve(_as_dict(train_return_nodes), train_names, "train"),
                "eval": _resolve(_as_dict(eval_return_nodes), eval_names, "eval")}
    return FeatureExtractor(model, resolved)


def _no_tracer_options(tracer_kwargs, concrete_args):
    if tracer_kwargs or concrete_args:
        raise InvalidArgumentError("tracer_kwargs and concrete_args are torch.fx options; excite traces by running "
                                   "the model (pass example_input=... for another input shape)")


def _as_dict(nodes):
    if isinstance(nodes, (list, tuple)):
        return {str(n): str(n) for n in nodes}
    if isinstance(nodes, dict):
        return {str(k): str(v) for k, v in nodes.items()}
    raise InvalidArgumentError(f"return nodes must be a list of names or a dict of name -> output name, got "
                               f"{type(nodes).__name__}")


def _resolve(queries, names, mode):
    """``{node name: output name}`` in node order, by torchvision's rule: a query is a node name or a
    prefix ending at a dot; walking the nodes from the last, each node takes the first query still
    open that names it (so of two queries naming one node, only the first is returned, as there)."""
    for query in queries:
        if not any(n == query or n.startswith(query + ".") for n in names):
            raise InvalidArgumentError(
                f"node: '{query}' is not present in model ({mode} mode). Hint: use `get_graph_node_names` to make "
                f"sure the `return_nodes` you specified are present. It may even be that you need to specify "
                f"`train_return_nodes` and `eval_return_nodes` separately. Valid nodes: {', '.join(names)}")
    open_queries = dict(queries)
    chosen = {}
    for name in reversed(names):
        for query in list(open_queries):
            depth = query.count(".")
            if ".".join(name.split(".")[:depth + 1]) == query:
                chosen[name] = open_queries.pop(query)
                break
    return {n: chosen[n] for n in names if n in chosen}


class FeatureExtractor(nn.Module):
    """The model's layers (shared, under their own names) and a forward that returns requested nodes."""

    def __init__(self, model, return_nodes):
        super().__init__()
        for name, child in model.named_children():
            self.add_module(name, child)
        self.__dict__["_model"] = model  # not a child: its layers are already this module's children
        self.return_nodes = return_nodes
        self.train(model.training)

    def forward(self, *inputs):
        model = self._model
        model.training = self.training
        wanted = self.return_nodes["train" if self.training else "eval"]
        tap = _Tap(model, wanted)
        for name, x in zip(_argument_names(model, len(inputs)), inputs):
            tap._keep(tap.namer.unique(name), x)
        try:
            with watching(tap):
                model(*inputs)
        except _Collected:
            pass
        missing = [n for n in wanted if n not in tap.found]
        if missing:
            raise InvalidArgumentError(f"the forward pass did not reach node(s) {', '.join(missing)} (a model whose "
                                       f"structure depends on its input?)")
        return {key: tap.found[name] for name, key in wanted.items()}

    def _graph_capture(self, example):
        """The eval graph with the requested nodes as its outputs (for ``excite.compile``)."""
        graph = capture(self._model, example)
        wanted = self.return_nodes["eval"]
        graph.outputs = [graph.visible[name] for name in wanted]
        graph.output_structure = ("dict", tuple(wanted.values()))
        return graph

    def _graph_module(self):
        return self._model

    def extra_repr(self):
        return f"return_nodes={self.return_nodes['train' if self.training else 'eval']}"


class _Collected(Exception):
    """Every requested node has been seen: the rest of the forward pass is not needed."""


class _Tap(Watcher):
    """Names events as `capture` does and keeps the outputs of the wanted nodes."""

    def __init__(self, model, wanted):
        self.namer = Namer(model)
        self.wanted = wanted
        self.found = {}

    def _keep(self, name, value):
        if name in self.wanted and isinstance(value, Tensor):
            self.found[name] = value
            if len(self.found) == len(self.wanted):
                raise _Collected

    def call_module(self, module, args, kwargs):
        name, leaf, outermost = self.namer.enter(module)
        try:
            output = module._call_impl(*args, **kwargs)
        finally:
            visible = self.namer.leave(name, leaf, outermost)
        if visible is not None:
            self._keep(visible, output)
        return output

    def applied(self, function, args, kwargs, result):
        visible, _ = self.namer.function(function, args, kwargs)
        if visible is not None:
            self._keep(visible, result)
