"""Normalisation layers (`BatchNorm1d`, `BatchNorm2d`, `LayerNorm`) with torch's parameters, buffers, updates and repr."""
import numpy as np

from ..errors import ShapeError, shape_str
from ..tensor import Tensor
from . import functional as F
from . import init
from .module import Module
from .parameter import Parameter, factory_array


class _BatchNorm(Module):
    _version = 2  # version 2 added num_batches_tracked; older checkpoints lack it

    def __init__(self, num_features, eps=1e-5, momentum=0.1, affine=True, track_running_stats=True, device=None,
                 dtype=None, *, bias=True):
        super().__init__()
        self.num_features = num_features
        self.eps = eps
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        if affine:
            self.weight = Parameter(factory_array((num_features,), device, dtype, fill=1.0))
            if bias:
                self.bias = Parameter(factory_array((num_features,), device, dtype, fill=0.0))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", Tensor(factory_array((num_features,), device, dtype, fill=0.0)))
            self.register_buffer("running_var", Tensor(factory_array((num_features,), device, dtype, fill=1.0)))
            self.register_buffer("num_batches_tracked", Tensor(np.zeros((), dtype=np.int64)))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)
        self.reset_parameters()

    def reset_running_stats(self):
        if self.track_running_stats:
            self.running_mean.data[...] = 0
            self.running_var.data[...] = 1
            self.num_batches_tracked.data[...] = 0

    def reset_parameters(self):
        self.reset_running_stats()
        if self.affine:
            init.ones_(self.weight)
            if self.bias is not None:
                init.zeros_(self.bias)

    def _check_input_dim(self, input):
        raise NotImplementedError

    def batch_norm_arguments(self):
        """``(running_mean, running_var, weight, bias, training, momentum, eps)`` for `F.batch_norm` for one
        forward pass, as torch's ``_BatchNorm.forward`` computes them — counting the batch in
        ``num_batches_tracked`` when training. Every path that runs this layer (the module, fused
        blocks) calls it once per batch, so the state update lives here only."""
        # momentum=None means a cumulative moving average: factor 1/n for the n-th batch
        factor = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats and self.num_batches_tracked is not None:
            self.num_batches_tracked.data += 1
            if self.momentum is None:
                factor = 1.0 / float(self.num_batches_tracked.data)
        bn_training = self.training or (self.running_mean is None and self.running_var is None)
        use_stats = not self.training or self.track_running_stats
        return (self.running_mean if use_stats else None, self.running_var if use_stats else None, self.weight,
                self.bias, bn_training, factor, self.eps)

    def forward(self, input):
        self._check_input_dim(input)
        return F.batch_norm(input, *self.batch_norm_arguments())

    def _load_from_state_dict(self, state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                              error_msgs, assign=False):
        version = local_metadata.get("version", None)
        if (version is None or version < 2) and self.track_running_stats:
            key = prefix + "num_batches_tracked"
            if key not in state_dict:
                state_dict[key] = self.num_batches_tracked if self.num_batches_tracked is not None else Tensor(
                    np.zeros((), dtype=np.int64))
        super()._load_from_state_dict(state_dict, prefix, local_metadata, strict, missing_keys, unexpected_keys,
                                      error_msgs, assign)

    def extra_repr(self):
        return ("{num_features}, eps={eps}, momentum={momentum}, affine={affine}, bias={use_bias}, "
                "track_running_stats={track_running_stats}".format(**self.__dict__, use_bias=self.bias is not None))


class BatchNorm2d(_BatchNorm):
    """``torch.nn.BatchNorm2d`` over ``[N, C, H, W]``; in training it updates running stats and counts batches."""

    def _check_input_dim(self, input):
        if input.ndim != 4:
            raise ShapeError(f"BatchNorm2d expects a 4D input [N, {self.num_features}, H, W], "
                             f"got {input.ndim}D input of shape {shape_str(input.shape)}")


class BatchNorm1d(_BatchNorm):
    """``torch.nn.BatchNorm1d`` over ``[N, C]`` or ``[N, C, L]``."""

    def _check_input_dim(self, input):
        if input.ndim not in (2, 3):
            raise ShapeError(f"BatchNorm1d expects a 2D or 3D input [N, {self.num_features}(, L)], "
                             f"got {input.ndim}D input of shape {shape_str(input.shape)}")


class LayerNorm(Module):
    """``torch.nn.LayerNorm``: normalise each sample over its last ``len(normalized_shape)`` dims."""

    def __init__(self, normalized_shape, eps=1e-5, elementwise_affine=True, bias=True, device=None, dtype=None):
        super().__init__()
        if isinstance(normalized_shape, (int, np.integer)):
            normalized_shape = (normalized_shape,)
        self.normalized_shape = tuple(int(s) for s in normalized_shape)
        self.eps = eps
        self.elementwise_affine = elementwise_affine
        if elementwise_affine:
            self.weight = Parameter(factory_array(self.normalized_shape, device, dtype))
            if bias:
                self.bias = Parameter(factory_array(self.normalized_shape, device, dtype))
            else:
                self.register_parameter("bias", None)
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        self.reset_parameters()

    def reset_parameters(self):
        if self.elementwise_affine:
            init.ones_(self.weight)
            if self.bias is not None:
                init.zeros_(self.bias)

    def forward(self, input):
        return F.layer_norm(input, self.normalized_shape, self.weight, self.bias, self.eps)

    def extra_repr(self):
        return ("{normalized_shape}, eps={eps}, elementwise_affine={elementwise_affine}, "
                "bias={use_bias}".format(**self.__dict__, use_bias=self.bias is not None))
