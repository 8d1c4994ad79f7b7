"""Convolution kernels (dense, 1x1, depthwise, grouped; forward and both backwards; the fused
inference path) against a direct tap-by-tap reference, in float32 and float64, any memory layout.

Budget: about 10 s with a warm numba cache (first run compiles the kernels: about a minute).
"""
import numpy as np
import pytest

from excite.kernels import conv as K
from excite.kernels.fused import conv_bn_act_inference
from excite.kernels.layout import is_channels_last
from oracle import REFERENCE_ACTIVATIONS, assert_close

TOL = {np.float32: dict(rtol=1e-5, atol=1e-5), np.float64: dict(rtol=1e-10, atol=1e-10)}


def _geometry(x_shape, w_shape, stride, padding, dilation):
    (n, c, h, w), (o, cg, kh, kw) = x_shape, w_shape
    oh = (h + 2 * padding[0] - dilation[0] * (kh - 1) - 1) // stride[0] + 1
    ow = (w + 2 * padding[1] - dilation[1] * (kw - 1) - 1) // stride[1] + 1
    return oh, ow


def _taps(x_shape, w_shape, stride, padding, dilation, groups):
    """Yield (group's in-channel slice, out-channel slice, i, j, padded-input window slices) per tap."""
    c, (o, cg, kh, kw) = x_shape[1], w_shape
    oh, ow = _geometry(x_shape, w_shape, stride, padding, dilation)
    og = o // groups
    for g in range(groups):
        for i in range(kh):
            for j in range(kw):
                rows = slice(i * dilation[0], i * dilation[0] + stride[0] * (oh - 1) + 1, stride[0])
                cols = slice(j * dilation[1], j * dilation[1] + stride[1] * (ow - 1) + 1, stride[1])
                yield slice(g * cg, (g + 1) * cg), slice(g * og, (g + 1) * og), i, j, rows, cols


def reference_conv2d(x, w, b, stride, padding, dilation, groups):
    """The definition: for every tap, out[n, o] += w[o, c, i, j] * shifted x[n, c] (float64)."""
    x, w = x.astype(np.float64), w.astype(np.float64)
    ph, pw = padding
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    oh, ow = _geometry(x.shape, w.shape, stride, padding, dilation)
    out = np.zeros((x.shape[0], w.shape[0], oh, ow))
    for cs, os_, i, j, rows, cols in _taps(x.shape, w.shape, stride, padding, dilation, groups):
        out[:, os_] += np.einsum("nchw,oc->nohw", xp[:, cs, rows, cols], w[os_, :, i, j])
    if b is not None:
        out += b.astype(np.float64)[None, :, None, None]
    return out


def reference_conv2d_backward(g, x, w, stride, padding, dilation, groups):
    """The same taps transposed: (grad of x, grad of w) for upstream gradient g (float64)."""
    g, x, w = g.astype(np.float64), x.astype(np.float64), w.astype(np.float64)
    ph, pw = padding
    h, wd = x.shape[2:]
    xp = np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)))
    gxp = np.zeros_like(xp)
    gw = np.zeros_like(w)
    for cs, os_, i, j, rows, cols in _taps(x.shape, w.shape, stride, padding, dilation, groups):
        gxp[:, cs, rows, cols] += np.einsum("nohw,oc->nchw", g[:, os_], w[os_, :, i, j])
        gw[os_, :, i, j] += np.einsum("nohw,nchw->oc", g[:, os_], xp[:, cs, rows, cols])
    return gxp[:, :, ph:ph + h, pw:pw + wd], gw


# (N, C, H, W, O, kernel, stride, padding, dilation, groups)
CASES = {
    "pointwise": (2, 5, 7, 6, 9, (1, 1), (1, 1), (0, 0), (1, 1), 1),
    "pointwise_strided": (3, 4, 9, 8, 6, (1, 1), (2, 2), (0, 0), (1, 1), 1),
    "pointwise_padded": (1, 3, 5, 5, 2, (1, 1), (1, 1), (1, 1), (1, 1), 1),
    "stem_3x3_s2": (2, 3, 17, 15, 8, (3, 3), (2, 2), (1, 1), (1, 1), 1),
    "dense_5x3_dilated": (1, 4, 12, 11, 5, (5, 3), (1, 2), (2, 0), (2, 1), 1),
    # wide enough for the compiled implicit product: odd output channels (a partial panel), dilation
    "dense_3x3_wide": (2, 5, 9, 13, 37, (3, 3), (1, 1), (1, 1), (1, 1), 1),
    "dense_5x3_dilated_wide": (1, 4, 14, 20, 5, (5, 3), (1, 2), (2, 0), (2, 1), 1),
    "depthwise_3x3": (2, 7, 9, 10, 7, (3, 3), (1, 1), (1, 1), (1, 1), 7),
    "depthwise_3x3_s2_odd": (1, 16, 15, 13, 16, (3, 3), (2, 2), (1, 1), (1, 1), 16),
    "depthwise_5x5_s2": (3, 5, 11, 12, 5, (5, 5), (2, 2), (2, 2), (1, 1), 5),
    "depthwise_5x5_unpadded": (2, 3, 8, 9, 3, (5, 5), (1, 1), (0, 0), (1, 1), 3),
    "depthwise_3x3_dilated": (2, 4, 10, 9, 4, (3, 3), (1, 1), (2, 2), (2, 2), 4),
    "depthwise_3x3_stride_1x2": (1, 6, 8, 9, 6, (3, 3), (1, 2), (1, 0), (1, 1), 6),
    "depthwise_7x7": (2, 3, 9, 9, 3, (7, 7), (2, 1), (3, 1), (1, 1), 3),
    "depthwise_1x3": (2, 5, 6, 7, 5, (1, 3), (1, 1), (0, 1), (1, 1), 5),
    "depthwise_multiplier_2": (2, 3, 7, 8, 6, (3, 3), (1, 1), (1, 1), (1, 1), 3),
    # wide rows (read in place, border tiles masked), channels past one SIMD vector, row dilation
    "depthwise_3x3_wide_40ch": (2, 40, 9, 37, 40, (3, 3), (1, 1), (1, 1), (1, 1), 40),
    "depthwise_5x5_s2_wide": (1, 24, 12, 70, 24, (5, 5), (2, 2), (2, 2), (1, 1), 24),
    "depthwise_3x3_row_dilated_wide": (1, 20, 11, 36, 20, (3, 3), (1, 1), (2, 1), (2, 1), 20),
    "depthwise_multiplier_3_s2": (1, 2, 9, 9, 6, (5, 5), (2, 2), (2, 2), (1, 1), 2),
    "grouped_2": (2, 6, 7, 7, 4, (3, 3), (1, 1), (1, 1), (1, 1), 2),
    "grouped_3_strided": (1, 9, 8, 9, 6, (3, 1), (2, 1), (1, 0), (1, 1), 3),
    # RegNet's grouped 3x3 (the compiled kernels): group width 8 and 16 (packed tiles: whole groups per vector;
    # 13 groups of 8 end in half a vector), 24, a group wider than one tile panel (40 > 32 columns), stride 2 on
    # odd sizes, unequal in / out widths per group, dilation, no padding, 5x5
    "grouped_3x3_width_8": (2, 48, 9, 11, 48, (3, 3), (1, 1), (1, 1), (1, 1), 6),
    "grouped_3x3_width_8_13_groups": (1, 104, 6, 15, 104, (3, 3), (1, 1), (1, 1), (1, 1), 13),
    "grouped_3x3_width_8_dilated": (2, 16, 9, 10, 16, (3, 3), (1, 1), (2, 2), (2, 2), 2),
    "grouped_3x3_width_16_s2": (2, 48, 9, 13, 48, (3, 3), (2, 2), (1, 1), (1, 1), 3),
    "grouped_5x5_width_8": (1, 16, 9, 8, 16, (5, 5), (1, 1), (2, 2), (1, 1), 2),  # 25 taps: passes of 3, then 1
    "grouped_3x3_width_24": (1, 72, 8, 7, 72, (3, 3), (1, 1), (1, 1), (1, 1), 3),
    "grouped_3x3_s2_odd": (3, 24, 13, 9, 24, (3, 3), (2, 2), (1, 1), (1, 1), 3),
    "grouped_3x3_width_40": (1, 80, 7, 15, 80, (3, 3), (1, 1), (1, 1), (1, 1), 2),
    "grouped_3x3_uneven": (2, 20, 10, 9, 30, (3, 3), (1, 2), (2, 2), (2, 2), 5),
    "grouped_3x3_unpadded": (1, 16, 8, 8, 16, (3, 3), (1, 1), (0, 0), (1, 1), 2),
    "grouped_5x5_s2": (2, 12, 11, 10, 18, (5, 5), (2, 2), (2, 2), (1, 1), 3),
    "batch_9_depthwise": (9, 4, 6, 5, 4, (3, 3), (1, 1), (1, 1), (1, 1), 4),
}


def _arrays(case, dtype, seed=0):
    n, c, h, wd, o, k, stride, padding, dilation, groups = CASES[case]
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, c, h, wd)).astype(dtype)
    w = rng.standard_normal((o, c // groups) + k).astype(dtype)
    b = rng.standard_normal(o).astype(dtype)
    return x, w, b, stride, padding, dilation, groups


def _layouts(x):
    """The same values as row-major NCHW, channels-last, and a non-contiguous view."""
    cl = np.ascontiguousarray(x.transpose(0, 2, 3, 1)).transpose(0, 3, 1, 2)
    big = np.zeros(x.shape[:3] + (2 * x.shape[3],), dtype=x.dtype)
    big[..., ::2] = x
    return {"nchw": x, "channels_last": cl, "strided": big[..., ::2]}


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("case", sorted(CASES))
def test_forward_and_backward_match_the_definition(case, dtype):
    x, w, b, stride, padding, dilation, groups = _arrays(case, dtype)
    expected = reference_conv2d(x, w, b, stride, padding, dilation, groups)
    g = np.random.default_rng(1).standard_normal(expected.shape).astype(dtype)
    expected_gx, expected_gw = reference_conv2d_backward(g, x, w, stride, padding, dilation, groups)
    for name, xl in _layouts(x).items():
        out = K.conv2d_forward(xl, w, b, stride, padding, dilation, groups)
        assert out.dtype == dtype, name
        assert_close(out, expected, f"forward ({name} input)", **TOL[dtype])
        for gname, gl in _layouts(g).items():
            gx = K.conv2d_backward_input(gl, x.shape, w, stride, padding, dilation, groups)
            gw = K.conv2d_backward_weight(gl, xl, w.shape, stride, padding, dilation, groups)
            gb = K.conv2d_backward_bias(gl)
            assert gx.shape == x.shape and gw.shape == w.shape and gw.dtype == dtype
            assert_close(gx, expected_gx, f"grad input ({name} x, {gname} grad)", **TOL[dtype])
            assert_close(gw, expected_gw, f"grad weight ({name} x, {gname} grad)", **TOL[dtype])
            assert_close(gb, g.astype(np.float64).sum(axis=(0, 2, 3)), "grad bias", **TOL[dtype])


@pytest.mark.parametrize("case", ["pointwise", "stem_3x3_s2", "depthwise_3x3_s2_odd", "depthwise_5x5_s2",
                                  "grouped_3x3_s2_odd"])
def test_dense_and_depthwise_outputs_are_channels_last(case):
    x, w, b, stride, padding, dilation, groups = _arrays(case, np.float32)
    assert is_channels_last(K.conv2d_forward(x, w, b, stride, padding, dilation, groups))


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
# (gelu: an activation the tiles leave to a pass over the rows after them)
@pytest.mark.parametrize("activation", [None, "relu", "relu6", "hardswish", "hardsigmoid", "silu", "sigmoid", "gelu"])
@pytest.mark.parametrize("case", ["pointwise", "pointwise_strided", "stem_3x3_s2", "dense_3x3_wide",
                                  "dense_5x3_dilated", "depthwise_3x3_s2_odd", "depthwise_5x5_s2", "depthwise_7x7",
                                  "depthwise_multiplier_2", "depthwise_3x3_wide_40ch", "depthwise_5x5_s2_wide",
                                  "grouped_2", "grouped_3x3_width_8", "grouped_3x3_s2_odd", "grouped_3x3_uneven",
                                  "grouped_3x3_width_8_13_groups", "grouped_3x3_width_16_s2"])
def test_fused_inference_equals_conv_then_batch_norm_then_activation(case, activation, dtype):
    x, w, b, stride, padding, dilation, groups = _arrays(case, dtype)
    rng = np.random.default_rng(2)
    o = w.shape[0]
    mean, var = 0.3 * rng.standard_normal(o), rng.uniform(0.5, 1.5, o)
    weight, bias, eps = rng.uniform(0.5, 1.5, o), 0.3 * rng.standard_normal(o), 1e-3
    norm = tuple(v.astype(dtype) for v in (mean, var, weight, bias)) + (eps,)
    scale = norm[2].astype(np.float64) / np.sqrt(norm[1].astype(np.float64) + eps)
    z = (reference_conv2d(x, w, b, stride, padding, dilation, groups) - norm[0][None, :, None, None]) \
        * scale[None, :, None, None] + norm[3][None, :, None, None]
    expected = REFERENCE_ACTIVATIONS[activation](z)
    out = conv_bn_act_inference(x, w, b, stride, padding, dilation, groups, norm, activation)
    assert_close(out, expected, f"fused conv + batch norm + {activation}", **TOL[dtype])
    residual = rng.standard_normal(expected.shape).astype(dtype)
    out = conv_bn_act_inference(x, w, b, stride, padding, dilation, groups, norm, activation, residual)
    assert_close(out, expected + residual, f"fused conv + batch norm + {activation} + residual", **TOL[dtype])
    no_affine = norm[:2] + (None, None, eps)
    out = conv_bn_act_inference(x, w, b, stride, padding, dilation, groups, no_affine, activation)
    z = (reference_conv2d(x, w, b, stride, padding, dilation, groups) - norm[0][None, :, None, None]) \
        / np.sqrt(norm[1].astype(np.float64) + eps)[None, :, None, None]
    assert_close(out, REFERENCE_ACTIVATIONS[activation](z), f"fused conv + batch norm without affine", **TOL[dtype])
    plain = conv_bn_act_inference(x, w, None, stride, padding, dilation, groups, None, activation)
    expected_plain = REFERENCE_ACTIVATIONS[activation](reference_conv2d(x, w, None, stride, padding, dilation, groups))
    assert_close(plain, expected_plain, f"fused conv + {activation}", **TOL[dtype])




@pytest.mark.parametrize("case", ["depthwise_3x3_s2_odd", "depthwise_multiplier_2", "stem_3x3_s2", "grouped_3_strided",
                                  "grouped_3x3_width_8", "grouped_3x3_s2_odd", "grouped_3x3_uneven"])
def test_against_torch(torch, case):
    x, w, b, stride, padding, dilation, groups = _arrays(case, np.float32)
    tx = torch.tensor(x, requires_grad=True)
    tw = torch.tensor(w, requires_grad=True)
    ref = torch.nn.functional.conv2d(tx, tw, torch.tensor(b), stride, padding, dilation, groups)
    g = np.random.default_rng(3).standard_normal(ref.shape).astype(np.float32)
    ref.backward(torch.tensor(g))
    assert_close(K.conv2d_forward(x, w, b, stride, padding, dilation, groups), ref.detach().numpy(), "forward")
    assert_close(K.conv2d_backward_input(g, x.shape, w, stride, padding, dilation, groups), tx.grad.numpy(), "gx")
    assert_close(K.conv2d_backward_weight(g, x, w.shape, stride, padding, dilation, groups), tw.grad.numpy(), "gw")


def test_large_depthwise_with_many_row_bands_matches_the_definition():
    """Batch 1 splits each image into row bands; the 3x3 and 5x5 paths use a padded band buffer."""
    rng = np.random.default_rng(4)
    for k, stride in ((3, 1), (5, 2)):
        x = rng.standard_normal((1, 24, 29, 31)).astype(np.float32)
        w = rng.standard_normal((24, 1, k, k)).astype(np.float32)
        pad = (k // 2, k // 2)
        out = K.conv2d_forward(x, w, None, (stride, stride), pad, (1, 1), 24)
        assert_close(out, reference_conv2d(x, w, None, (stride, stride), pad, (1, 1), 24), f"{k}x{k} s{stride}")


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_wide_groups_of_regnet_match_torch(torch, dtype):
    """RegNet-Y's widest groups (264 and 528 channels: K = 2376 and 4752 taps, many tile panels) at 7x7,
    stride 1 and 2, forward and both gradients."""
    rng = np.random.default_rng(5)
    for c, groups, stride in ((528, 2, 1), (1056, 4, 2)):
        x = rng.standard_normal((1, c, 7, 7)).astype(dtype)
        w = (rng.standard_normal((c, c // groups, 3, 3)) / 50).astype(dtype)
        tx, tw = torch.tensor(x, requires_grad=True), torch.tensor(w, requires_grad=True)
        ref = torch.nn.functional.conv2d(tx, tw, None, stride, 1, 1, groups)
        g = rng.standard_normal(ref.shape).astype(dtype)
        ref.backward(torch.tensor(g))
        s, p, d = (stride, stride), (1, 1), (1, 1)
        assert_close(K.conv2d_forward(x, w, None, s, p, d, groups), ref.detach().numpy(), f"forward {c}/{groups}",
                     **TOL[dtype])
        assert_close(K.conv2d_backward_input(g, x.shape, w, s, p, d, groups), tx.grad.numpy(), "gx", **TOL[dtype])
        assert_close(K.conv2d_backward_weight(g, x, w.shape, s, p, d, groups), tw.grad.numpy(), "gw", **TOL[dtype])
