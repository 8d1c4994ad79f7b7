"""The ops MaxViT adds: LayerNorm, GELU (erf and tanh), relative-position multi-head attention over windows and the
window / grid partitions, against torch / torchvision (outputs and gradients) and by float64 finite differences."""
import numpy as np
import pytest

import excite as ex
import excite.nn.functional as F
from excite import nn
from excite.vision.models import maxvit
from oracle import assert_close, check_op, randn


def gradcheck(fn, *arrays):
    inputs = [ex.tensor(np.array(a, dtype=np.float64), requires_grad=True) for a in arrays]
    assert ex.autograd.gradcheck(fn, inputs)


# ----- LayerNorm ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("shape, normalized", [((2, 5, 7, 64), (64,)), ((3, 4, 6), (4, 6)), ((5, 512), 512)])
def test_layer_norm_matches_torch(torch, dtype, shape, normalized):
    last = (normalized,) if isinstance(normalized, int) else normalized
    rng = np.random.default_rng(0)
    x = 3 * rng.standard_normal(shape) + 1.5  # off-centre: a mean that is not subtracted would show
    w, b = rng.uniform(0.5, 1.5, last), rng.standard_normal(last)
    check_op(torch, lambda x, w, b: F.layer_norm(x, normalized, w, b, eps=1e-5),
             lambda x, w, b: torch.nn.functional.layer_norm(x, last, w, b, eps=1e-5), [x, w, b], dtype=dtype)
    check_op(torch, lambda x: F.layer_norm(x, normalized, eps=1e-3),
             lambda x: torch.nn.functional.layer_norm(x, last, eps=1e-3), [x], dtype=dtype)


def test_layer_norm_gradcheck():
    gradcheck(lambda x, w, b: F.layer_norm(x, (3, 4), w, b), randn(2, 3, 4), randn(3, 4), randn(3, 4))
    gradcheck(lambda x: F.layer_norm(x, 6), randn(4, 6))


def test_layer_norm_module_matches_torch_layout_and_repr(torch):
    for kwargs in ({}, dict(eps=1e-6, bias=False), dict(elementwise_affine=False)):
        ours, theirs = nn.LayerNorm((4, 8), **kwargs), torch.nn.LayerNorm((4, 8), **kwargs)
        assert repr(ours) == repr(theirs)
        assert [(k, tuple(v.shape)) for k, v in ours.state_dict().items()] == \
            [(k, tuple(v.shape)) for k, v in theirs.state_dict().items()]
        for k, v in ours.state_dict().items():
            assert_close(v.numpy(), theirs.state_dict()[k].numpy(), k)  # ones and zeros


def test_layer_norm_rejects_a_mismatched_shape():
    with pytest.raises(ex.ShapeError, match=r"expected input with shape \[\*, 8\], got \[2, 3, 4\]"):
        F.layer_norm(ex.randn(2, 3, 4), 8)
    with pytest.raises(ex.ShapeError, match="weight must have shape"):
        F.layer_norm(ex.randn(2, 4), 4, weight=ex.ones(5))


# ----- GELU ---------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_matches_torch(torch, dtype, approximate):
    x = np.concatenate([np.linspace(-8, 8, 97), 4 * np.random.default_rng(0).standard_normal(300)]).reshape(-1, 1, 397)
    check_op(torch, lambda x: F.gelu(x, approximate=approximate),
             lambda x: torch.nn.functional.gelu(x, approximate=approximate), [x], dtype=dtype)
    check_op(torch, lambda x: nn.GELU(approximate)(x), lambda x: torch.nn.GELU(approximate)(x), [x], dtype=dtype)
    assert repr(nn.GELU(approximate)) == repr(torch.nn.GELU(approximate))


@pytest.mark.parametrize("approximate", ["none", "tanh"])
def test_gelu_gradcheck(approximate):
    gradcheck(lambda x: F.gelu(x, approximate=approximate), randn(3, 7) * 3)


def test_gelu_fused_in_a_convolution_epilogue_matches_torch(torch):
    """The compiled kernels apply GELU in their epilogues (the MaxViT stem: conv, BatchNorm, GELU)."""
    from excite.kernels.fused import conv_bn_act_inference

    rng = np.random.default_rng(1)
    x, w = rng.standard_normal((2, 3, 18, 17)).astype(np.float32), rng.standard_normal((40, 3, 3, 3)).astype(np.float32)
    for approximate, name in (("none", "gelu"), ("tanh", "_gelu_tanh")):
        ours = conv_bn_act_inference(x, w, None, (2, 2), (1, 1), (1, 1), 1, None, name)
        theirs = torch.nn.functional.gelu(torch.nn.functional.conv2d(torch.tensor(x), torch.tensor(w), None, 2, 1),
                                          approximate=approximate)
        assert_close(ours, theirs.numpy(), f"conv + gelu ({approximate})")


def test_gelu_rejects_an_unknown_approximation():
    with pytest.raises(ex.InvalidArgumentError, match="approximate must be 'none' or 'tanh', got 'fast'"):
        nn.GELU("fast")
    with pytest.raises(ex.InvalidArgumentError, match="got 'erf'"):
        F.gelu(ex.randn(3), approximate="erf")


# ----- relative-position multi-head attention --------------------------------------------------------------
def _attention_pair(torch, torchvision, feat_dim, head_dim, size, seed=0):
    from torchvision.models import maxvit as tv_maxvit

    torch.manual_seed(seed)
    theirs = tv_maxvit.RelativePositionalMultiHeadAttention(feat_dim, head_dim, size * size)
    with torch.no_grad():  # a bias table far from its 0.02 init, so a wrong gather shows
        theirs.relative_position_bias_table.normal_(0, 1.0)
    ours = maxvit.RelativePositionalMultiHeadAttention(feat_dim, head_dim, size * size)
    ours.load_state_dict({k: v.numpy().copy() for k, v in theirs.state_dict().items()})
    return ours, theirs


def test_relative_position_index_matches_torchvision(torchvision):
    from torchvision.models import maxvit as tv_maxvit

    for h, w in ((7, 7), (3, 5), (1, 4)):
        np.testing.assert_array_equal(maxvit._get_relative_position_index(h, w),
                                      tv_maxvit._get_relative_position_index(h, w).numpy())


@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
def test_attention_matches_torchvision_outputs_and_gradients(torch, torchvision, dtype):
    """Windows of 7x7 tokens, 2 heads: the output, the input's gradient and every parameter's."""
    ours, theirs = _attention_pair(torch, torchvision, 64, 32, 7)
    if dtype == np.float64:
        ours.double()
        theirs.double()
    x = np.random.default_rng(2).standard_normal((2, 3, 49, 64)).astype(dtype)
    g = np.random.default_rng(3).standard_normal((2, 3, 49, 64)).astype(dtype)
    xe, xt = ex.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    ye, yt = ours(xe), theirs(xt)
    ye.backward(ex.tensor(g))
    yt.backward(torch.tensor(g))
    tol = dict(rtol=1e-5) if dtype == np.float32 else dict(rtol=1e-12)
    assert_close(ye.numpy(), yt.detach().numpy(), "attention output", exact_dtype=True, **tol)
    assert_close(xe.grad.numpy(), xt.grad.numpy(), "grad of input", **tol)
    theirs_params = dict(theirs.named_parameters())
    for name, p in ours.named_parameters():
        assert_close(p.grad.numpy(), theirs_params[name].grad.numpy(), f"grad of {name}", **tol)


def test_attention_gradcheck():
    """float64 finite differences through qkv, the scaled dot products, the gathered bias and the softmax, for
    the input and for the bias table (whose gather repeats rows: the backward accumulates them)."""
    ex.manual_seed(0)
    attention = maxvit.RelativePositionalMultiHeadAttention(8, 4, 4).double()
    nn.init.normal_(attention.relative_position_bias_table, std=1.0)
    gradcheck(lambda x: attention(x), randn(1, 2, 4, 8))
    x = ex.tensor(randn(1, 2, 4, 8))
    gradcheck(lambda table: _attention_with_table(attention, x, table), attention.relative_position_bias_table.numpy())


def _attention_with_table(attention, x, table):
    """The attention output with ``table`` (a differentiable tensor) as the relative position bias table."""
    attention.__dict__["relative_position_bias_table"] = table  # shadows the parameter for this call
    try:
        return attention(x)
    finally:
        del attention.__dict__["relative_position_bias_table"]


def test_attention_rejects_a_wrong_window():
    attention = maxvit.RelativePositionalMultiHeadAttention(64, 32, 49)
    with pytest.raises(ex.ShapeError, match=r"expects input \[B, G, 49, 64\], got \[1, 2, 36, 64\]"):
        attention(ex.randn(1, 2, 36, 64))


# ----- window and grid partitions ----------------------------------------------------------------------------
@pytest.mark.parametrize("dtype", [np.float32, np.float64], ids=["f32", "f64"])
@pytest.mark.parametrize("p", [7, 2])
def test_partitions_match_torchvision(torch, torchvision, dtype, p):
    """Window partition (P x P neighbours), grid partition (the swap), and their inverses, values and gradients."""
    from torchvision.models import maxvit as tv_maxvit

    x = np.random.default_rng(4).standard_normal((2, 5, 14, 14))
    hp = wp = 14 // p
    for ours_fn, theirs_fn in (
            (lambda t: maxvit.WindowPartition()(t, p), lambda t: tv_maxvit.WindowPartition()(t, p)),
            (lambda t: maxvit.SwapAxes(-2, -3)(maxvit.WindowPartition()(t, p)),
             lambda t: tv_maxvit.SwapAxes(-2, -3)(tv_maxvit.WindowPartition()(t, p))),
            (lambda t: maxvit.WindowDepartition()(maxvit.WindowPartition()(t, p) * 2, p, hp, wp),
             lambda t: tv_maxvit.WindowDepartition()(tv_maxvit.WindowPartition()(t, p) * 2, p, hp, wp))):
        check_op(torch, ours_fn, theirs_fn, [x], dtype=dtype)


def test_partitions_gradcheck():
    gradcheck(lambda t: maxvit.SwapAxes(-2, -3)(maxvit.WindowPartition()(t, 2)) * t.sum(), randn(1, 3, 4, 6))
    gradcheck(lambda t: maxvit.WindowDepartition()(t, 2, 2, 3) ** 2, randn(1, 6, 4, 3))
