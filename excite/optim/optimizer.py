"""`Optimizer`: parameter groups, per-parameter state and torch-compatible state dicts."""
from collections import defaultdict

import numpy as np

from ..autograd import enable_grad
from ..errors import InvalidArgumentError
from ..tensor import Tensor


class _RequiredParameter:
    """Marks a hyper-parameter that has no default and must be given per group."""

    def __repr__(self):
        return "<required parameter>"


required = _RequiredParameter()


def grad_array(param):
    """The gradient of ``param`` as an ndarray in the parameter's dtype, or None."""
    grad = param.grad
    if grad is None:
        return None
    grad = grad.data if isinstance(grad, Tensor) else np.asarray(grad)
    if grad.shape != param.data.shape:
        raise InvalidArgumentError(
            f"a parameter of shape {list(param.data.shape)} has a gradient of shape {list(grad.shape)}"
        )
    return grad if grad.dtype == param.data.dtype else grad.astype(param.data.dtype)


def zeros_state(param):
    return Tensor(np.zeros_like(param.data))


def step_state(value=0.0):
    # torch keeps the step count as a float32 scalar tensor (checkpoints carry it that way)
    return Tensor(np.array(value, dtype=np.float32))


def _as_array(value):
    if isinstance(value, Tensor):
        return value.data
    return np.asarray(value)  # ndarrays and torch tensors (through __array__)


class Optimizer:
    """Base class of the optimizers: holds ``param_groups`` (a list of dicts) and ``state``.

    ``params`` is an iterable of Tensors, of ``(name, Tensor)`` pairs, or of dicts each
    holding ``"params"`` plus per-group hyper-parameters; missing ones come from ``defaults``.
    """

    def __init__(self, params, defaults):
        self.defaults = defaults
        self.state = defaultdict(dict)
        self.param_groups = []
        if isinstance(params, Tensor):
            raise InvalidArgumentError(
                "params given to the optimizer should be an iterable of Tensors or dicts, got a single Tensor; "
                "pass [tensor] or model.parameters()"
            )
        param_groups = list(params)
        if len(param_groups) == 0:
            raise InvalidArgumentError("optimizer got an empty parameter list")
        if not isinstance(param_groups[0], dict):
            param_groups = [{"params": param_groups}]
        for group in param_groups:
            self.add_param_group(dict(group))

    def __repr__(self):
        lines = [self.__class__.__name__ + " ("]
        for i, group in enumerate(self.param_groups):
            lines.append(f"Parameter Group {i}")
            for key in sorted(group):
                if key not in ("params", "param_names"):
                    lines.append(f"    {key}: {group[key]}")
        lines.append(")")
        return "\n".join(lines)

    # ----- groups ---------------------------------------------------------------------------
    def add_param_group(self, param_group):
        """Add a group of parameters (a dict with ``"params"``) with its own hyper-parameters."""
        if not isinstance(param_group, dict):
            raise InvalidArgumentError(f"param_group must be a dict, got {type(param_group).__name__}")
        params = param_group["params"]
        if isinstance(params, Tensor):
            params = [params]
        elif isinstance(params, set):
            raise InvalidArgumentError(
                "optimizer parameters need to be an ordered collection (the order of a set changes "
                "between runs); use a list"
            )
        else:
            params = list(params)
        tensors, names = [], []
        for p in params:
            if isinstance(p, tuple):
                names.append(p[0])
                p = p[1]
            tensors.append(p)
        if names and len(names) != len(tensors):
            raise InvalidArgumentError("all optimizer params should be with or without names; some names are missing")
        for p in tensors:
            if not isinstance(p, Tensor):
                raise InvalidArgumentError(f"optimizer can only optimize Tensors, but one of the params is {type(p).__name__}")
            if not p.is_leaf:
                raise InvalidArgumentError("can't optimize a non-leaf Tensor")
        param_group["params"] = tensors
        if names:
            param_group["param_names"] = names
        for name, default in self.defaults.items():
            if default is required and name not in param_group:
                raise InvalidArgumentError(f"parameter group didn't specify a value of required optimization parameter {name}")
            param_group.setdefault(name, default)
        if len({id(p) for p in tensors}) != len(tensors):
            raise InvalidArgumentError("optimizer contains a parameter group with duplicate parameters")
        seen = {id(p) for group in self.param_groups for p in group["params"]}
        if any(id(p) in seen for p in tensors):
            raise InvalidArgumentError("some parameters appear in more than one parameter group")
        for group in self.param_groups:
            if ("param_names" in group) != ("param_names" in param_group):
                raise InvalidArgumentError("all optimizer param groups should be with names or all without")
        self.param_groups.append(param_group)

    def zero_grad(self, set_to_none=True):
        """Reset the gradients: to None (default), or to zeros in place."""
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                if set_to_none:
                    p.grad = None
                elif isinstance(p.grad, Tensor):
                    p.grad.data[...] = 0
                else:
                    p.grad = Tensor(np.zeros_like(p.data))

    # ----- stepping ---------------------------------------------------------------------------
    def step(self, closure=None):
        """Update every parameter that has a gradient; ``closure`` re-evaluates and returns the loss."""
        loss = None
        if closure is not None:
            with enable_grad():
                loss = closure()
        for group in self.param_groups:
            for p in group["params"]:
                grad = grad_array(p)
                if grad is not None:
                    self._update(p, grad, group)
        return loss

    def _update(self, param, grad, group):
        """Apply one step to ``param.data`` in place; per-parameter buffers live in ``self.state[param]``."""
        raise NotImplementedError

    # ----- checkpoints ----------------------------------------------------------------------
    def state_dict(self):
        """``{"state": {index: {...}}, "param_groups": [{..., "params": [indices]}]}`` as torch lays it out.

        Parameters are numbered in group order; state values are Tensors (the live buffers,
        as in torch), so the dict can be written to a torch-loadable checkpoint.
        """
        index_of = {}
        groups = []
        for group in self.param_groups:
            packed = {k: v for k, v in group.items() if k != "params"}
            for p in group["params"]:
                index_of.setdefault(id(p), len(index_of))
            packed["params"] = [index_of[id(p)] for p in group["params"]]
            groups.append(packed)
        state = {}
        for p, values in self.state.items():
            key = index_of[id(p)] if isinstance(p, Tensor) else p
            state[key] = dict(values)
        return {"state": state, "param_groups": groups}

    def load_state_dict(self, state_dict):
        """Restore hyper-parameters and state saved by ``state_dict`` (excite's or torch's).

        State arrays are copied and floating ones cast to their parameter's dtype; ``step``
        is kept as a float32 scalar.
        """
        if not isinstance(state_dict, dict) or "state" not in state_dict or "param_groups" not in state_dict:
            raise InvalidArgumentError("optimizer state_dict must be a dict with 'state' and 'param_groups'")
        saved_groups = state_dict["param_groups"]
        if len(saved_groups) != len(self.param_groups):
            raise InvalidArgumentError(
                f"loaded state dict has {len(saved_groups)} parameter groups, the optimizer has "
                f"{len(self.param_groups)}"
            )
        for i, (group, saved) in enumerate(zip(self.param_groups, saved_groups)):
            if len(group["params"]) != len(saved["params"]):
                raise InvalidArgumentError(
                    f"loaded state dict's parameter group {i} has {len(saved['params'])} parameters, "
                    f"the optimizer's has {len(group['params'])}"
                )
        param_of = {}
        for group, saved in zip(self.param_groups, saved_groups):
            for p, index in zip(group["params"], saved["params"]):
                param_of[int(index)] = p

        state = defaultdict(dict)
        for key, values in state_dict["state"].items():
            # keys are ints; formats that only have string keys (JSON-like) give "0", "1", ...
            is_index = isinstance(key, (int, np.integer)) or (isinstance(key, str) and key.isdigit())
            param = param_of.get(int(key)) if is_index else None
            if param is None:
                state[key] = values
                continue
            state[param] = {name: self._load_state_value(param, name, v) for name, v in values.items()}
        new_groups = []
        for group, saved in zip(self.param_groups, saved_groups):
            new_group = {k: (tuple(v) if isinstance(v, list) and k == "betas" else v)
                         for k, v in saved.items() if k != "params"}
            new_group["params"] = group["params"]
            if "param_names" in group and "param_names" not in new_group:
                new_group["param_names"] = group["param_names"]
            for name, default in self.defaults.items():
                new_group.setdefault(name, default)
            new_groups.append(new_group)
        self.state = state
        self.param_groups = new_groups

    @staticmethod
    def _load_state_value(param, name, value):
        if value is None or isinstance(value, (bool, str)):
            return value
        if name == "step":
            return step_state(float(_as_array(value)))
        array = _as_array(value)
        if array.dtype.kind == "f" and param.data.dtype.kind == "f":
            array = array.astype(param.data.dtype)
        return Tensor(np.array(array, copy=True))
