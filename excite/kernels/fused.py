"""Inference-only fusion: convolution, batch norm (eval affine), activation and a residual add in one pass.

The result equals ``act(batch_norm(conv2d(x))) + residual`` evaluated as convolution, then
``* scale + shift`` (the conv bias folded into ``shift``), then the activation, then the add, so it
agrees with the unfused path to rounding; `conv.conv2d_forward` runs the epilogue inside its kernels.
"""
from .conv import common_dtype, conv2d_forward
from .norm import inference_affine


def conv_bn_act_inference(x, w, conv_bias, stride, padding, dilation, groups, norm, activation, residual=None):
    """``act(batch_norm(conv2d(x, w, conv_bias))) + residual``; channels-last for groups 1 / depthwise.

    ``norm`` is (running_mean, running_var, weight, bias, eps) or None (no normalisation);
    ``activation`` is a registry name or None; ``residual`` (the output's shape) is added last, or None.
    """
    if norm is None:
        return conv2d_forward(x, w, conv_bias, stride, padding, dilation, groups, activation=activation,
                              residual=residual)
    scale, shift = inference_affine(*norm, conv_bias=conv_bias, dtype=common_dtype(x, w))
    return conv2d_forward(x, w, None, stride, padding, dilation, groups, scale, shift, activation, residual)
