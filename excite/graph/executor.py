"""`excite.compile`: a module captured, optimised and run as a list of prepared kernel calls.

For each input shape the model is captured once (`capture`), the passes fuse it (`passes`), and
every node becomes a step that holds what it needs — the kernel plan for its exact shape
(`kernels.conv.Conv2dPlan`, `kernels.pointwise.Pointwise`, `kernels.se.SqueezeExcitationPlan`) and
the positions of its inputs and output — so a call runs the steps with no module dispatch, no
autograd and no per-call checks. The large results are written into buffers planned once
(`passes.memory`) and kept per thread, so several threads can share one compiled model. A step
whose arrays are all such buffers or constants is bound once per thread (`Conv2dPlan.bind`,
`SqueezeExcitationPlan.bind`): its views and kernel operands are made once, and a call is the kernel
call alone (about 4.5 us less Python per step).

A compiled model is a snapshot: it reads the weights when it is built (and `refresh` reads them
again); later changes to the module do not reach it.
"""
import threading
from typing import Callable, Optional, Sequence

import numpy as np

from ..errors import InvalidArgumentError, ShapeError, shape_str
from ..kernels import activation as A
from ..kernels import buffers
from ..kernels.conv import Conv2dPlan
from ..kernels.layout import from_nhwc, is_channels_last
from ..kernels.norm import batch_norm_affine, batch_norm_apply
from ..kernels.pointwise import Pointwise, supported
from ..kernels.pooling import adaptive_avg_pool2d
from ..kernels.se import SqueezeExcitationPlan, se_inference
from ..tensor import Tensor
from .capture import capture
from .passes import optimize
from .passes.memory import plan_memory
from .schedule import crossing, rebatched, sub_batches


class CompiledModel:
    """The callable `excite.compile` returns: ``compiled(x)`` equals ``model.eval()(x)`` under no_grad.

    The input's dtype, rank and channel count are fixed by the example input; another batch size or
    image size is planned once, on its first call (the plans are cached per shape).
    """

    def __init__(self, module, example_input, passes=None):
        from .. import nn

        if not isinstance(module, nn.Module):
            raise InvalidArgumentError(f"excite.compile expects an excite.nn.Module, got {type(module).__name__}")
        x = _array(example_input, "example_input")
        if x.dtype.kind != "f":
            raise InvalidArgumentError(f"excite.compile needs a floating-point example input, got dtype {x.dtype}")
        self.module = module
        self.dtype = x.dtype
        self.ndim = x.ndim
        self.channels = x.shape[1] if x.ndim >= 2 else None
        self.passes = passes
        self._lock = threading.RLock()  # (a plan's sub-batch plans are made while it is held)
        self._plans = {}
        self.refresh(shapes=[x.shape])

    def refresh(self, shapes=None):
        """Read the module's weights again and re-plan (for the shapes already seen, or ``shapes``)."""
        graph_module = getattr(self.module, "_graph_module", None)
        source = graph_module() if graph_module is not None else self.module
        self._snapshot = {k: v.data.copy() for k, v in source.state_dict(keep_vars=True).items()}
        with self._lock:
            shapes = list(self._plans) if shapes is None else [tuple(s) for s in shapes]
            self._plans = {}
        for shape in shapes:
            self._plan_for(tuple(shape))

    @property
    def graph(self):
        """The optimised graph of the first planned input shape (print it for a table of its nodes)."""
        return next(iter(self._plans.values())).graph

    def plans(self):
        """The input shapes planned so far."""
        return list(self._plans)

    def _plan_for(self, shape):
        plan = self._plans.get(shape)
        if plan is not None:
            return plan
        with self._lock:
            plan = self._plans.get(shape)
            if plan is None:
                plan = self._plans[shape] = _Plan(self._graph_for(shape), split=True)
        return plan

    def _graph_for(self, shape):
        """The module captured on an input of ``shape``, with the snapshot's weights, optimised."""
        example = np.zeros(shape, self.dtype)
        capture_target = getattr(self.module, "_graph_capture", None)
        graph = capture_target(example) if capture_target is not None else capture(self.module, example)
        for key, value in graph.parameters.items():
            snap = self._snapshot.get(key)
            if snap is not None and snap.shape == value.shape:
                value.data = snap
        return optimize(graph) if self.passes is None else _run(graph, self.passes)

    def __call__(self, input):
        x = _array(input, "input")
        if x.dtype != self.dtype:
            raise InvalidArgumentError(f"this model was compiled for {self.dtype} input, got {x.dtype}; compile "
                                       f"again with an example of that dtype")
        if x.ndim != self.ndim or (self.channels is not None and x.shape[1] != self.channels):
            want = f"[N, {self.channels}, ...] ({self.ndim} dims)" if self.channels is not None else f"{self.ndim} dims"
            raise ShapeError(f"this model was compiled for input of shape {want}, got {shape_str(x.shape)}")
        outputs = self._plan_for(x.shape).run(np.ascontiguousarray(x))
        return self._structure(outputs)

    def _structure(self, outputs):
        structure = next(iter(self._plans.values())).graph.output_structure
        tensors = [Tensor(o) for o in outputs]
        if structure is None:
            return tensors[0]
        if structure[0] == "tuple":
            return tuple(tensors)
        return dict(zip(structure[1], tensors))

    def __repr__(self):
        return (f"CompiledModel({type(self.module).__name__}, input [N, {self.channels}, ...] {self.dtype}, "
                f"{len(self._plans)} planned shape{'s' if len(self._plans) != 1 else ''})")


def compile(model: "Module", example_input, passes: Optional[Sequence[Callable]] = None) -> CompiledModel:  # noqa: A001
    """Compile ``model`` for inference: capture it on ``example_input``, fuse it, plan its kernels and
    buffers; returns a `CompiledModel` (a snapshot of the weights: call its ``refresh()`` after
    changing them). ``passes`` replaces the default pass pipeline (`excite.graph.passes.PIPELINE`)."""
    return CompiledModel(model, example_input, passes)


def _run(graph, passes):
    for run in passes:
        run(graph)
    return graph


def _array(value, what):
    if isinstance(value, Tensor):
        return value.data
    if isinstance(value, np.ndarray):
        return value
    raise InvalidArgumentError(f"{what} must be a Tensor or a NumPy array, got {type(value).__name__}")


# ----- the plan: steps and buffers --------------------------------------------------------------------
class _Plan:
    """The steps of one optimised graph and the buffers they write into (one set per thread).

    With ``split`` a batched plan runs the stretches `schedule.sub_batches` picks a few images at a time,
    each through a plan of the graph rebatched to that size (`_SubBatches`); it makes steps only for the
    nodes it runs itself. ``runs`` limits a plan to the nodes in those index ranges (a sub-batch plan's
    share).
    """

    def __init__(self, graph, split=False, runs=None, handed=()):
        self.graph = graph
        self.index = {}
        for v in graph.inputs:
            self._slot(v)
        for node in graph.nodes:
            for v in node.inputs:
                if hasattr(v, "producer"):
                    self._slot(v)
            self._slot(node.output)
        for v in graph.outputs:
            self._slot(v)
        self.constants = {self.index[v]: v.data for v in self.index if v.kind in ("parameter", "constant")}
        self.segments = _SubBatches.segments(self) if split else [(0, len(graph.nodes), None)]
        keep = {}
        if runs is None:  # this plan runs the whole-batch segments, and holds what the others hand over
            runs = [(a, b) for a, b, sub in self.segments if sub is None]
            handed = [k for _, _, sub in self.segments if sub is not None for k in sub.crossing[1]]
            # a stretch run in sub-batches reads its inputs until its last node has written its outputs
            for _, b, sub in self.segments:
                for value in [self.value(k) for k in sub.crossing[0] if k >= 0] if sub is not None else ():
                    keep[value] = max(b - 1, keep.get(value, -1))
        handed = {self.value(k) for k in handed if k >= 0}
        self.runs = {i for a, b in runs for i in range(a, b)}
        channels_last = set()
        self.steps = []
        self.buffered = {}
        for i, node in enumerate(graph.nodes):
            step = _make_step(node, self.index, channels_last) if i in self.runs else None
            self.steps.append(step)
            kind = step.buffer if step is not None else None
            if step is None and node.output in handed:  # made by another plan: copied into a buffer here
                kind = "nhwc" if len(node.output.shape) == 4 else "rows"
            if kind is not None:
                self.buffered[node.output] = kind
                if kind == "nhwc":
                    channels_last.add(node.output)
        self.memory = plan_memory(graph, set(self.buffered), keep)
        self.inputs = [self.index[v] for v in graph.inputs]
        self.outputs = [self.index[v] for v in graph.outputs]
        self._local = threading.local()

    def value(self, position):
        """The graph's input (position -1) or the output of the node at ``position``."""
        return self.graph.inputs[0] if position < 0 else self.graph.nodes[position].output

    def _slot(self, value):
        if value not in self.index:
            self.index[value] = len(self.index)

    def _workspace(self):
        """This thread's (env, calls): the constants and planned buffers in their slots, and for each step a
        function of no arguments with its operands bound where they all are such fixed arrays, else None."""
        workspace = getattr(self._local, "workspace", None)
        if workspace is None:
            env = [None] * len(self.index)
            for i, data in self.constants.items():
                env[i] = data
            slots = [buffers.aligned_empty(size, np.uint8) for size in self.memory.slot_sizes]
            for value, kind in self.buffered.items():
                env[self.index[value]] = _view(slots[self.memory.slot_of[value]], value, kind)
            fixed = set(self.constants) | {self.index[value] for value in self.buffered}
            calls = [step.bind(env, fixed) if i in self.runs else None for i, step in enumerate(self.steps)]
            workspace = self._local.workspace = (env, calls)
        return workspace

    def run(self, *inputs):
        env, calls = self._workspace()
        env = list(env)
        for i, x in zip(self.inputs, inputs):
            env[i] = x
        for start, stop, sub in self.segments:
            if sub is None:
                self.run_steps(env, calls, start, stop)
            else:
                sub.run(env, self.graph.inputs[0].shape[0], start, stop)
        return [np.array(env[i], copy=True) for i in self.outputs]

    def run_steps(self, env, calls, start, stop):
        for step, call in zip(self.steps[start:stop], calls[start:stop]):
            if call is None:
                step(env)
            else:
                call()  # its output is already where env points: the planned buffer


class _SubBatches:
    """A stretch of a batched plan run a few images at a time through a plan of the graph rebatched to
    that size: the values it reads sliced in, the values it makes that are read after it or returned
    copied into the batched plan's buffers. ``crossing`` is (values read, values handed on) as positions
    (`_Plan.value`); ``ins`` holds for each value read (batched plan's slot, sub-batch plan's slot, whether
    the steps are bound to that buffer), ``outs`` for each value handed on (batched slot, sub-batch slot).
    """

    def __init__(self, plan, size, crossing, ins, outs):
        self.plan, self.size, self.crossing, self.ins, self.outs = plan, size, crossing, ins, outs

    @staticmethod
    def segments(parent):
        """`schedule.sub_batches`' segments of ``parent``'s graph, each sub-batch one with its `_SubBatches`
        (one plan per size)."""
        graph = parent.graph
        segments = sub_batches(graph)
        position = {node.output: i for i, node in enumerate(graph.nodes)}
        crossings = {(a, b): [[position.get(v, -1) for v in values] for values in crossing(graph, a, b)]
                     for a, b, size in segments if size is not None}
        plans = {}
        for size in sorted({size for _, _, size in segments if size is not None}):
            runs = [(a, b) for a, b, s in segments if s == size]
            handed = [k for a, b in runs for k in crossings[a, b][0]]
            plans[size] = _Plan(rebatched(graph, size), runs=runs, handed=handed)

        def stretch(a, b, size):
            plan = plans[size]
            ins, outs = crossings[a, b]
            return _SubBatches(plan, size, (ins, outs),
                               [(parent.index[parent.value(k)], plan.index[plan.value(k)],
                                 plan.value(k) in plan.buffered) for k in ins],
                               [(parent.index[parent.value(k)], plan.index[plan.value(k)]) for k in outs])

        return [(a, b, None if size is None else stretch(a, b, size)) for a, b, size in segments]

    def run(self, env, batch, start, stop):
        sub_env, calls = self.plan._workspace()
        sub_env = list(sub_env)
        for first in range(0, batch, self.size):
            images = slice(first, first + self.size)
            for p, q, bound in self.ins:
                if bound:  # the steps read this buffer: fill it
                    sub_env[q][...] = env[p][images]
                else:
                    sub_env[q] = env[p][images]
            self.plan.run_steps(sub_env, calls, start, stop)
            for p, q in self.outs:
                env[p][images] = sub_env[q]


def _view(slot, value, kind):
    """The array a step writes ``value`` into: NCHW-shaped over channels-last memory ('nhwc'), or C order."""
    flat = slot[:int(np.prod(value.shape, dtype=np.int64)) * value.dtype.itemsize].view(value.dtype)
    if kind == "nhwc":
        n, c, h, w = value.shape
        return from_nhwc(flat.reshape(n, h, w, c))
    return flat.reshape(value.shape)


# ----- steps ----------------------------------------------------------------------------------------------
def _make_step(node, index, channels_last):
    maker = _STEPS.get(node.op, _FunctionStep)
    return maker(node, index, channels_last)


class _Step:
    buffer = None  # 'nhwc' or 'rows' when the step writes into a planned buffer

    def __init__(self, node, index, channels_last):
        self.name = node.name
        self.args = [index[v] if hasattr(v, "producer") else ("literal", v) for v in node.inputs]
        self.out = index[node.output]

    def arg(self, env, k):
        a = self.args[k]
        return a[1] if isinstance(a, tuple) else env[a]

    def bind(self, env, fixed):
        """This step as a function of no arguments when its arrays are the same on every call (all in
        ``fixed``: constants and planned buffers) and its kernel plan can bind them; else None."""
        return None

    def _bindable(self, fixed):
        return self.buffer is not None and all(isinstance(a, tuple) or a in fixed for a in self.args)  # (literals)

    def __repr__(self):
        return f"<{type(self).__name__} {self.name}>"


class _ConvStep(_Step):
    def __init__(self, node, index, channels_last):
        super().__init__(node, index, channels_last)
        x, w, b = node.inputs[:3]
        a = node.attrs
        self.plan = Conv2dPlan(x.shape, node.output.dtype, x in channels_last, w.data, None if b is None else b.data,
                               a["stride"], a["padding"], a["dilation"], a["groups"], a.get("scale"), a.get("shift"),
                               a.get("activation"), kept=True)
        self.residual = index[node.inputs[3]] if a.get("residual") else None
        if self.plan.path in ("depthwise", "pointwise", "dense", "grouped_compiled"):
            self.buffer = "nhwc"

    def bind(self, env, fixed):
        if not self._bindable(fixed) or (self.residual is not None and self.residual not in fixed):
            return None
        return self.plan.bind(env[self.args[0]], env[self.out].transpose(0, 2, 3, 1),
                              None if self.residual is None else env[self.residual])

    def __call__(self, env):
        out = env[self.out]
        target = out.transpose(0, 2, 3, 1) if self.buffer else None
        residual = env[self.residual] if self.residual is not None else None
        env[self.out] = self.plan(env[self.args[0]], target, residual)


class _SqueezeExcitationStep(_Step):
    def __init__(self, node, index, channels_last):
        super().__init__(node, index, channels_last)
        x, w1, b1, w2, b2 = node.inputs
        self.weights = (w1.data, None if b1 is None else b1.data, w2.data, None if b2 is None else b2.data)
        self.activations = (node.attrs["activation"], node.attrs["scale_activation"])
        self.plan = None
        if x in channels_last and supported(np.empty(0, x.dtype), w1.data) and all(
                A.compiled_code(a)[1] is None for a in self.activations):
            self.plan = SqueezeExcitationPlan(x.shape[0], x.dtype, "channels_last", *self.weights, *self.activations)
            self.buffer = "nhwc"

    def bind(self, env, fixed):
        if self.plan is None or not self._bindable(fixed):
            return None
        return self.plan.bind(env[self.args[0]], env[self.out])

    def __call__(self, env):
        x = env[self.args[0]]
        if self.plan is not None:
            self.plan(x, env[self.out])
        else:
            env[self.out] = se_inference(x, *self.weights, *self.activations)


class _PoolStep(_Step):
    def __init__(self, node, index, channels_last):
        super().__init__(node, index, channels_last)
        x = node.inputs[0]
        size = node.attrs["output_size"]
        size = (size, size) if isinstance(size, int) else tuple(size)
        h, w = x.shape[2:]
        self.size = (h if size[0] is None else size[0], w if size[1] is None else size[1])
        self.global_mean = self.size == (1, 1) and x in channels_last and x.dtype in (np.float32, np.float64)
        if self.global_mean:
            from ..kernels.compiled import channel_reduce  # noqa: F401  (compiled on first use)

            self.buffer = "rows"
            self.pixels = (x.shape[0], h * w, x.shape[1])
            self.work_ns = int(np.prod(x.shape)) * 0.3

    def bind(self, env, fixed):
        if not (self.global_mean and self._bindable(fixed)):
            return None
        from ..kernels.pooling import channel_reduce

        x, out = env[self.args[0]], env[self.out]
        pixels = x.transpose(0, 2, 3, 1).reshape(self.pixels)
        if not np.shares_memory(pixels, x):
            return None
        return channel_reduce.channel_means.bind(pixels, out.reshape(out.shape[:2]), work_ns=self.work_ns)

    def __call__(self, env):
        x = env[self.args[0]]
        if self.global_mean:
            from ..kernels.pooling import channel_reduce

            out = env[self.out]
            channel_reduce.channel_means(x.transpose(0, 2, 3, 1).reshape(self.pixels), out.reshape(out.shape[:2]),
                                         work_ns=self.work_ns)
        else:
            env[self.out] = adaptive_avg_pool2d(x, self.size)


class _LinearStep(_Step):
    def __init__(self, node, index, channels_last):
        super().__init__(node, index, channels_last)
        x, w, b = node.inputs
        self.activation = node.attrs.get("activation")
        self.product = None
        if len(x.shape) == 2 and supported(np.empty(0, x.dtype), w.data):
            self.product = Pointwise(x.shape[0], w.data, None, None if b is None else b.data, self.activation, x.dtype,
                                     kept=True)
            self.buffer = "rows"
        else:
            self.w, self.b = w.data, None if b is None else b.data

    def bind(self, env, fixed):
        if self.product is None or not self._bindable(fixed) or not env[self.args[0]].flags.c_contiguous:
            return None
        return self.product.bind(env[self.args[0]], env[self.out])

    def __call__(self, env):
        x = env[self.args[0]]
        if self.product is not None:
            self.product(np.ascontiguousarray(x), env[self.out])
            return
        y = np.matmul(x, self.w.T)
        if self.b is not None:
            y += self.b
        env[self.out] = A.forward(y, self.activation, out=y)


class _ActivationStep(_Step):
    def __init__(self, node, index, channels_last):
        super().__init__(node, index, channels_last)
        self.activation = node.attrs["activation"]

    def __call__(self, env):
        env[self.out] = A.forward(env[self.args[0]], self.activation)


class _BatchNormStep(_Step):
    """Eval batch norm that could not be folded into a convolution: one affine pass (plus activation)."""

    def __init__(self, node, index, channels_last):
        super().__init__(node, index, channels_last)
        x, mean, var, weight, bias = node.inputs
        a = node.attrs
        if a["training"] or mean is None:
            raise InvalidArgumentError(f"node {node.name!r}: batch norm with batch statistics cannot run in a "
                                       f"compiled (inference) graph")
        scale, shift, _ = batch_norm_affine(mean.data.astype(np.float64), var.data,
                                            None if weight is None else weight.data,
                                            None if bias is None else bias.data, a["eps"])
        self.scale, self.shift = scale.astype(node.output.dtype), shift.astype(node.output.dtype)
        self.activation = a.get("activation")

    def __call__(self, env):
        env[self.out] = batch_norm_apply(env[self.args[0]], self.scale, self.shift, self.activation)


class _BinaryStep(_Step):
    def __init__(self, node, index, channels_last):
        super().__init__(node, index, channels_last)
        self.ufunc = {"add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.true_divide}[node.op]
        self.dtype = node.output.dtype

    def __call__(self, env):
        a, b = self.arg(env, 0), self.arg(env, 1)
        shape = np.broadcast_shapes(np.shape(a), np.shape(b))
        if isinstance(a, np.ndarray) and a.shape == shape and a.dtype == self.dtype:
            out = buffers.empty_like(a)
        else:
            out = np.empty(shape, self.dtype)
        env[self.out] = self.ufunc(a, b, out=out)


class _ReshapeStep(_Step):
    def __init__(self, node, index, channels_last):
        super().__init__(node, index, channels_last)
        self.shape = node.attrs["shape"]

    def bind(self, env, fixed):
        """A reshape of a fixed array that is a view of it is made once: the workspace keeps the view (it
        becomes fixed for the steps after) and the step does nothing."""
        source = env[self.args[0]]
        if self.args[0] not in fixed:
            return None
        view = np.reshape(source, self.shape)
        if not np.shares_memory(view, source):
            return None
        env[self.out] = view
        fixed.add(self.out)
        return _nothing

    def __call__(self, env):
        env[self.out] = np.reshape(env[self.args[0]], self.shape)


def _nothing():
    pass


class _FunctionStep(_Step):
    """Any other op: its Function's forward on the arrays, as the eager engine runs it without grad."""

    def __init__(self, node, index, channels_last):
        super().__init__(node, index, channels_last)
        if node.op == "function":
            self.function = node.attrs["function"]
            self.kwargs = {k: v for k, v in node.attrs.items() if k != "function"}
        else:
            raise InvalidArgumentError(f"node {node.name!r}: the executor has no step for op {node.op!r}")
        self.kwarg_values = {k: index[v] for k, v in self.kwargs.items() if hasattr(v, "producer")}

    def __call__(self, env):
        function = self.function
        ctx = function.__new__(function)
        ctx.needs_input_grad = (False,) * len(self.args)
        kwargs = dict(self.kwargs)
        for k, i in self.kwarg_values.items():
            kwargs[k] = env[i]
        out = ctx.forward(*(self.arg(env, k) for k in range(len(self.args))), **kwargs)
        env[self.out] = out if isinstance(out, np.ndarray) else np.asarray(out)


_STEPS = {"conv2d": _ConvStep, "se": _SqueezeExcitationStep, "adaptive_avg_pool2d": _PoolStep,
          "linear": _LinearStep, "activation": _ActivationStep, "batch_norm": _BatchNormStep,
          "add": _BinaryStep, "sub": _BinaryStep, "mul": _BinaryStep, "div": _BinaryStep,
          "reshape": _ReshapeStep, "function": _FunctionStep}
