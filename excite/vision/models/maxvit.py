"""MaxViT-T with torchvision's module names, init and settings: MBConv (with SE) then window and grid attention."""
import math
from collections import OrderedDict
from functools import partial

import numpy as np

from ... import nn
from ...errors import InvalidArgumentError, ShapeError, shape_str
from ...nn import Conv2dNormActivation, SqueezeExcitation, StochasticDepth
from ...nn.parameter import Buffer, Parameter
from ._utils import _load_weights, _ovewrite_named_param, _resolve_weights

__all__ = ["MaxVit", "maxvit_t"]


def _get_conv_output_shape(input_size, kernel_size, stride, padding):
    return ((input_size[0] - kernel_size + 2 * padding) // stride + 1,
            (input_size[1] - kernel_size + 2 * padding) // stride + 1)


def _make_block_input_shapes(input_size, n_blocks):
    """The input size of each block (after the stride-2 stem and each block's stride-2 first layer)."""
    shapes = []
    block_input_shape = _get_conv_output_shape(input_size, 3, 2, 1)
    for _ in range(n_blocks):
        block_input_shape = _get_conv_output_shape(block_input_shape, 3, 2, 1)
        shapes.append(block_input_shape)
    return shapes


def _get_relative_position_index(height, width):
    """[H*W, H*W] int64: for every (query, key) pair of a window, the row of its relative offset in the bias table."""
    coords = np.stack(np.meshgrid(np.arange(height), np.arange(width), indexing="ij"))
    coords_flat = coords.reshape(2, -1)
    relative_coords = (coords_flat[:, :, None] - coords_flat[:, None, :]).transpose(1, 2, 0).copy()
    relative_coords[:, :, 0] += height - 1
    relative_coords[:, :, 1] += width - 1
    relative_coords[:, :, 0] *= 2 * width - 1
    return relative_coords.sum(-1).astype(np.int64)


class MBConv(nn.Module):
    """MBConv: pre-norm, 1x1 expand, depthwise 3x3, SE (SiLU + Sigmoid), 1x1 project; residual through
    ``proj`` (3x3 average pool and 1x1 conv when the shape changes)."""

    def __init__(self, in_channels, out_channels, expansion_ratio, squeeze_ratio, stride, activation_layer,
                 norm_layer, p_stochastic_dropout=0.0):
        super().__init__()
        should_proj = stride != 1 or in_channels != out_channels
        if should_proj:
            proj = [nn.Conv2d(in_channels, out_channels, kernel_size=1, stride=1, bias=True)]
            if stride == 2:
                proj = [nn.AvgPool2d(kernel_size=3, stride=stride, padding=1)] + proj
            self.proj = nn.Sequential(*proj)
        else:
            self.proj = nn.Identity()

        mid_channels = int(out_channels * expansion_ratio)
        sqz_channels = int(out_channels * squeeze_ratio)

        if p_stochastic_dropout:
            self.stochastic_depth = StochasticDepth(p_stochastic_dropout, mode="row")
        else:
            self.stochastic_depth = nn.Identity()

        _layers = OrderedDict()
        _layers["pre_norm"] = norm_layer(in_channels)
        _layers["conv_a"] = Conv2dNormActivation(in_channels, mid_channels, kernel_size=1, stride=1, padding=0,
                                                 activation_layer=activation_layer, norm_layer=norm_layer,
                                                 inplace=None)
        _layers["conv_b"] = Conv2dNormActivation(mid_channels, mid_channels, kernel_size=3, stride=stride,
                                                 padding=1, activation_layer=activation_layer,
                                                 norm_layer=norm_layer, groups=mid_channels, inplace=None)
        _layers["squeeze_excitation"] = SqueezeExcitation(mid_channels, sqz_channels, activation=nn.SiLU)
        _layers["conv_c"] = nn.Conv2d(in_channels=mid_channels, out_channels=out_channels, kernel_size=1, bias=True)
        self.layers = nn.Sequential(_layers)

    def forward(self, x):
        res = self.proj(x)
        x = self.stochastic_depth(self.layers(x))
        return res + x


class RelativePositionalMultiHeadAttention(nn.Module):
    """Multi-head self-attention within each group of P tokens of [B, G, P, D], with a learned bias per head
    and relative offset of the two tokens in their sqrt(P) x sqrt(P) window (softmax over the group)."""

    def __init__(self, feat_dim, head_dim, max_seq_len):
        super().__init__()
        if feat_dim % head_dim != 0:
            raise InvalidArgumentError(f"feat_dim: {feat_dim} must be divisible by head_dim: {head_dim}")
        self.n_heads = feat_dim // head_dim
        self.head_dim = head_dim
        self.size = int(math.sqrt(max_seq_len))
        self.max_seq_len = max_seq_len

        self.to_qkv = nn.Linear(feat_dim, self.n_heads * self.head_dim * 3)
        self.scale_factor = feat_dim ** -0.5

        self.merge = nn.Linear(self.head_dim * self.n_heads, feat_dim)
        self.relative_position_bias_table = Parameter(
            np.empty(((2 * self.size - 1) * (2 * self.size - 1), self.n_heads), dtype=np.float32))
        self.relative_position_index = Buffer(_get_relative_position_index(self.size, self.size))
        nn.init.trunc_normal_(self.relative_position_bias_table, std=0.02)

    def get_relative_positional_bias(self):
        """[1, heads, P, P]: the bias table gathered at each (query, key) pair's relative offset."""
        bias_index = self.relative_position_index.data.reshape(-1)
        relative_bias = self.relative_position_bias_table[bias_index].view(self.max_seq_len, self.max_seq_len, -1)
        return relative_bias.permute(2, 0, 1).unsqueeze(0)

    def forward(self, x):
        if x.ndim != 4 or x.shape[-1] != self.n_heads * self.head_dim or x.shape[2] != self.max_seq_len:
            raise ShapeError(f"RelativePositionalMultiHeadAttention expects input [B, G, {self.max_seq_len}, "
                             f"{self.n_heads * self.head_dim}], got {shape_str(x.shape)}")
        B, G, P, D = x.shape
        H, DH = self.n_heads, self.head_dim

        qkv = self.to_qkv(x)
        q, k, v = qkv[..., :D], qkv[..., D:2 * D], qkv[..., 2 * D:]  # torch.chunk(qkv, 3, dim=-1)

        q = q.reshape(B, G, P, H, DH).permute(0, 1, 3, 2, 4)
        k = k.reshape(B, G, P, H, DH).permute(0, 1, 3, 2, 4)
        v = v.reshape(B, G, P, H, DH).permute(0, 1, 3, 2, 4)

        k = k * self.scale_factor
        dot_prod = q @ k.transpose(-2, -1)  # einsum("B G H I D, B G H J D -> B G H I J")
        pos_bias = self.get_relative_positional_bias()

        dot_prod = (dot_prod + pos_bias).softmax(dim=-1)

        out = dot_prod @ v  # einsum("B G H I J, B G H J D -> B G H I D")
        out = out.permute(0, 1, 3, 2, 4).reshape(B, G, P, D)
        return self.merge(out)


class SwapAxes(nn.Module):
    """``torch.swapaxes(x, a, b)`` as a module."""

    def __init__(self, a, b):
        super().__init__()
        self.a = a
        self.b = b

    def forward(self, x):
        return x.transpose(self.a, self.b)


class WindowPartition(nn.Module):
    """[B, C, H, W] -> [B, (H/P)*(W/P), P*P, C]: non-overlapping P x P windows as groups of tokens."""

    def forward(self, x, p):
        B, C, H, W = x.shape
        P = p
        x = x.reshape(B, C, H // P, P, W // P, P)
        x = x.permute(0, 2, 4, 3, 5, 1)
        return x.reshape(B, (H // P) * (W // P), P * P, C)


class WindowDepartition(nn.Module):
    """[B, HP*WP, P*P, C] -> [B, C, HP*P, WP*P]: the inverse of `WindowPartition`."""

    def forward(self, x, p, h_partitions, w_partitions):
        B, G, PP, C = x.shape
        P = p
        HP, WP = h_partitions, w_partitions
        x = x.reshape(B, HP, WP, P, P, C)
        x = x.permute(0, 5, 1, 3, 2, 4)
        return x.reshape(B, C, HP * P, WP * P)


class PartitionAttentionLayer(nn.Module):
    """Attention then MLP (both pre-norm, residual) within windows ("window": P x P neighbours) or across a
    grid ("grid": tokens H/P apart), on a [B, C, H, W] feature map."""

    def __init__(self, in_channels, head_dim, partition_size, partition_type, grid_size, mlp_ratio,
                 activation_layer, norm_layer, attention_dropout, mlp_dropout, p_stochastic_dropout):
        super().__init__()
        self.n_heads = in_channels // head_dim
        self.head_dim = head_dim
        self.n_partitions = grid_size[0] // partition_size
        self.partition_type = partition_type
        self.grid_size = grid_size

        if partition_type not in ["grid", "window"]:
            raise InvalidArgumentError("partition_type must be either 'grid' or 'window'")

        if partition_type == "window":
            self.p, self.g = partition_size, self.n_partitions
        else:
            self.p, self.g = self.n_partitions, partition_size

        self.partition_op = WindowPartition()
        self.departition_op = WindowDepartition()
        self.partition_swap = SwapAxes(-2, -3) if partition_type == "grid" else nn.Identity()
        self.departition_swap = SwapAxes(-2, -3) if partition_type == "grid" else nn.Identity()

        self.attn_layer = nn.Sequential(
            norm_layer(in_channels),
            # partition_size ** 2 tokens for both types, thanks to the grid's axis swap
            RelativePositionalMultiHeadAttention(in_channels, head_dim, partition_size ** 2),
            nn.Dropout(attention_dropout),
        )
        self.mlp_layer = nn.Sequential(
            nn.LayerNorm(in_channels),
            nn.Linear(in_channels, in_channels * mlp_ratio),
            activation_layer(),
            nn.Linear(in_channels * mlp_ratio, in_channels),
            nn.Dropout(mlp_dropout),
        )
        self.stochastic_dropout = StochasticDepth(p_stochastic_dropout, mode="row")

    def forward(self, x):
        gh, gw = self.grid_size[0] // self.p, self.grid_size[1] // self.p
        if self.grid_size[0] % self.p != 0 or self.grid_size[1] % self.p != 0:
            raise ShapeError(f"Grid size must be divisible by partition size. Got grid size of {self.grid_size} "
                             f"and partition size of {self.p}")
        if tuple(x.shape[2:]) != tuple(self.grid_size):
            raise ShapeError(f"PartitionAttentionLayer was built for {self.grid_size[0]}x{self.grid_size[1]} "
                             f"feature maps, got input of shape {shape_str(x.shape)}")
        x = self.partition_op(x, self.p)
        x = self.partition_swap(x)
        x = x + self.stochastic_dropout(self.attn_layer(x))
        x = x + self.stochastic_dropout(self.mlp_layer(x))
        x = self.departition_swap(x)
        return self.departition_op(x, self.p, gh, gw)


class MaxVitLayer(nn.Module):
    """MBConv, then window attention, then grid attention (keys MBconv, window_attention, grid_attention)."""

    def __init__(self, in_channels, out_channels, squeeze_ratio, expansion_ratio, stride, norm_layer,
                 activation_layer, head_dim, mlp_ratio, mlp_dropout, attention_dropout, p_stochastic_dropout,
                 partition_size, grid_size):
        super().__init__()
        layers = OrderedDict()
        layers["MBconv"] = MBConv(in_channels=in_channels, out_channels=out_channels,
                                  expansion_ratio=expansion_ratio, squeeze_ratio=squeeze_ratio, stride=stride,
                                  activation_layer=activation_layer, norm_layer=norm_layer,
                                  p_stochastic_dropout=p_stochastic_dropout)
        for name, partition_type in (("window_attention", "window"), ("grid_attention", "grid")):
            layers[name] = PartitionAttentionLayer(
                in_channels=out_channels, head_dim=head_dim, partition_size=partition_size,
                partition_type=partition_type, grid_size=grid_size, mlp_ratio=mlp_ratio,
                activation_layer=activation_layer, norm_layer=nn.LayerNorm, attention_dropout=attention_dropout,
                mlp_dropout=mlp_dropout, p_stochastic_dropout=p_stochastic_dropout)
        self.layers = nn.Sequential(layers)

    def forward(self, x):
        return self.layers(x)


class MaxVitBlock(nn.Module):
    """``n_layers`` MaxVitLayers, the first of stride 2."""

    def __init__(self, in_channels, out_channels, squeeze_ratio, expansion_ratio, norm_layer, activation_layer,
                 head_dim, mlp_ratio, mlp_dropout, attention_dropout, partition_size, input_grid_size, n_layers,
                 p_stochastic):
        super().__init__()
        if not len(p_stochastic) == n_layers:
            raise InvalidArgumentError(f"p_stochastic must have length n_layers={n_layers}, "
                                       f"got p_stochastic={p_stochastic}.")
        self.layers = nn.ModuleList()
        # the first layer's stride
        self.grid_size = _get_conv_output_shape(input_grid_size, kernel_size=3, stride=2, padding=1)
        for idx, p in enumerate(p_stochastic):
            stride = 2 if idx == 0 else 1
            self.layers += [MaxVitLayer(
                in_channels=in_channels if idx == 0 else out_channels, out_channels=out_channels,
                squeeze_ratio=squeeze_ratio, expansion_ratio=expansion_ratio, stride=stride, norm_layer=norm_layer,
                activation_layer=activation_layer, head_dim=head_dim, mlp_ratio=mlp_ratio, mlp_dropout=mlp_dropout,
                attention_dropout=attention_dropout, partition_size=partition_size, grid_size=self.grid_size,
                p_stochastic_dropout=p)]

    def forward(self, x):
        for layer in self.layers:
            x = layer(x)
        return x


class MaxVit(nn.Module):
    """MaxViT from `MaxViT: Multi-Axis Vision Transformer <https://arxiv.org/abs/2204.01697>`_.

    Args:
        input_size (tuple[int, int]): the image size the attention grids are built for
        stem_channels (int): channels of the stem's convolutions
        partition_size (int): side of the attention windows (and of the grid)
        block_channels (list[int]), block_layers (list[int]): per block, its channels and layers
        head_dim (int): channels per attention head
        stochastic_depth_prob (float): stochastic depth probability of the last layer (earlier ones less)
        norm_layer (callable, optional): the convolutions' norm (default BatchNorm2d(eps=1e-3, momentum=0.01))
        activation_layer (callable): default GELU
        squeeze_ratio, expansion_ratio (float): MBConv's SE and expansion ratios
        mlp_ratio (int), mlp_dropout, attention_dropout (float): the transformer layers'
        num_classes (int): number of classes
    """

    def __init__(self, input_size, stem_channels, partition_size, block_channels, block_layers, head_dim,
                 stochastic_depth_prob, norm_layer=None, activation_layer=nn.GELU, squeeze_ratio=0.25,
                 expansion_ratio=4, mlp_ratio=4, mlp_dropout=0.0, attention_dropout=0.0, num_classes=1000):
        super().__init__()
        input_channels = 3
        # the original TensorFlow model's BatchNorm settings
        if norm_layer is None:
            norm_layer = partial(nn.BatchNorm2d, eps=1e-3, momentum=0.01)

        # every block's input must split into whole partitions
        block_input_sizes = _make_block_input_shapes(input_size, len(block_channels))
        for idx, block_input_size in enumerate(block_input_sizes):
            if block_input_size[0] % partition_size != 0 or block_input_size[1] % partition_size != 0:
                raise InvalidArgumentError(
                    f"Input size {block_input_size} of block {idx} is not divisible by partition size "
                    f"{partition_size}. Consider changing the partition size or the input size.\n"
                    f"Current configuration yields the following block input sizes: {block_input_sizes}.")

        self.stem = nn.Sequential(
            Conv2dNormActivation(input_channels, stem_channels, 3, stride=2, norm_layer=norm_layer,
                                 activation_layer=activation_layer, bias=False, inplace=None),
            Conv2dNormActivation(stem_channels, stem_channels, 3, stride=1, norm_layer=None, activation_layer=None,
                                 bias=True),
        )
        input_size = _get_conv_output_shape(input_size, kernel_size=3, stride=2, padding=1)
        self.partition_size = partition_size

        self.blocks = nn.ModuleList()
        in_channels = [stem_channels] + block_channels[:-1]
        out_channels = block_channels
        # stochastic depth from 0 to stochastic_depth_prob over all layers of all blocks
        p_stochastic = np.linspace(0, stochastic_depth_prob, sum(block_layers)).tolist()
        p_idx = 0
        for in_channel, out_channel, num_layers in zip(in_channels, out_channels, block_layers):
            self.blocks.append(MaxVitBlock(
                in_channels=in_channel, out_channels=out_channel, squeeze_ratio=squeeze_ratio,
                expansion_ratio=expansion_ratio, norm_layer=norm_layer, activation_layer=activation_layer,
                head_dim=head_dim, mlp_ratio=mlp_ratio, mlp_dropout=mlp_dropout, attention_dropout=attention_dropout,
                partition_size=partition_size, input_grid_size=input_size, n_layers=num_layers,
                p_stochastic=p_stochastic[p_idx:p_idx + num_layers]))
            input_size = self.blocks[-1].grid_size
            p_idx += num_layers

        # Linear -> Tanh -> Linear head, as the original model's
        self.classifier = nn.Sequential(
            nn.AdaptiveAvgPool2d(1),
            nn.Flatten(),
            nn.LayerNorm(block_channels[-1]),
            nn.Linear(block_channels[-1], block_channels[-1]),
            nn.Tanh(),
            nn.Linear(block_channels[-1], num_classes, bias=False),
        )
        self._init_weights()

    def forward(self, x):
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        return self.classifier(x)

    def _init_weights(self):
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)
            elif isinstance(m, nn.BatchNorm2d):
                nn.init.constant_(m.weight, 1)
                nn.init.constant_(m.bias, 0)
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, std=0.02)
                if m.bias is not None:
                    nn.init.zeros_(m.bias)


def _maxvit(arch, stem_channels, block_channels, block_layers, stochastic_depth_prob, partition_size, head_dim,
            weights=None, progress=False, **kwargs):
    entry = _resolve_weights(arch, weights, kwargs)
    if entry is not None:
        _ovewrite_named_param(kwargs, "input_size", entry.meta["min_size"])
    input_size = kwargs.pop("input_size", (224, 224))
    model = MaxVit(stem_channels=stem_channels, block_channels=block_channels, block_layers=block_layers,
                   stochastic_depth_prob=stochastic_depth_prob, head_dim=head_dim, partition_size=partition_size,
                   input_size=input_size, **kwargs)
    return _load_weights(model, entry, progress)


def maxvit_t(*, weights=None, progress=True, **kwargs):
    """MaxViT-T from `MaxViT: Multi-Axis Vision Transformer <https://arxiv.org/abs/2204.01697>`_.

    Args:
        weights: pretrained weights (a name or entry known to ``excite.vision.weights``), or None.
        progress (bool): show a progress bar while fetching weights.
        **kwargs: the arguments of :class:`MaxVit` (``input_size`` (default 224 x 224: the attention grids are
            built for one size), ``num_classes``, ``stochastic_depth_prob``, ...).
    """
    return _maxvit("maxvit_t", stem_channels=64, block_channels=[64, 128, 256, 512], block_layers=[2, 2, 5, 2],
                   head_dim=32, stochastic_depth_prob=0.2, partition_size=7, weights=weights, progress=progress,
                   **kwargs)
