"""Module, Parameter and containers: registration, iteration, state_dict, loading, repr — against torch."""
import copy
import pickle
from collections import OrderedDict

import numpy as np
import pytest

import excite as ex
from excite import nn
from excite.errors import ExciteError
from oracle import assert_close


def build(lib):
    """The same small network in torch (lib=torch) or excite (lib=excite), built through the shared API."""
    tnn = lib.nn

    class Block(tnn.Module):
        def __init__(self):
            super().__init__()
            self.conv = tnn.Conv2d(3, 4, 3, padding=1, bias=False)
            self.alpha = tnn.Parameter(lib.zeros(1))  # a parameter assigned after a submodule
            self.register_buffer("scale", lib.ones(4))
            self.register_buffer("scratch", lib.zeros(2), persistent=False)
            self.bn = tnn.BatchNorm2d(4)
            self.act = tnn.ReLU(inplace=True)

        def forward(self, x):
            return self.act(self.bn(self.conv(x))) * self.scale.reshape(1, 4, 1, 1) + self.alpha

    class Net(tnn.Module):
        def __init__(self):
            super().__init__()
            self.stem = Block()
            self.pool = tnn.AdaptiveAvgPool2d(1)
            self.head = tnn.Sequential(tnn.Flatten(), tnn.Dropout(0.2), tnn.Linear(4, 3))
            self.temperature = tnn.Parameter(lib.ones(1))

        def forward(self, x):
            return self.head(self.pool(self.stem(x))) * self.temperature

    return Net()


def to_numpy_state(sd):
    return {k: v.detach().numpy().copy() for k, v in sd.items()}


@pytest.fixture
def pair(torch):
    net_t = build(torch)
    net_e = build(ex)
    net_e.load_state_dict(to_numpy_state(net_t.state_dict()))
    return net_e, net_t


# ----- registration and iteration -----------------------------------------------------------------
def test_state_dict_keys_follow_torch_order(pair):
    net_e, net_t = pair
    assert list(net_e.state_dict()) == list(net_t.state_dict())
    assert isinstance(net_e.state_dict(), OrderedDict)


def test_named_members_match_torch(pair):
    net_e, net_t = pair
    for method in ("named_parameters", "named_buffers", "named_modules", "named_children"):
        assert [n for n, _ in getattr(net_e, method)()] == [n for n, _ in getattr(net_t, method)()], method
    assert [n for n, _ in net_e.named_parameters(prefix="model")] == \
        [n for n, _ in net_t.named_parameters(prefix="model")]
    assert [n for n, _ in net_e.named_parameters(recurse=False)] == ["temperature"]
    assert [n for n, _ in net_e.stem.named_buffers(recurse=False)] == ["scale", "scratch"]
    memo = {net_e.head}  # modules already in the memo are skipped, with their subtrees
    assert [n for n, _ in net_e.named_modules(memo=memo)] == [n for n, _ in net_t.named_modules(memo={net_t.head})]
    assert len(list(net_e.parameters())) == len(list(net_t.parameters()))
    assert len(list(net_e.buffers())) == len(list(net_t.buffers()))
    assert [type(m).__name__ for m in net_e.modules()] == [type(m).__name__ for m in net_t.modules()]
    assert [type(m).__name__ for m in net_e.children()] == [type(m).__name__ for m in net_t.children()]


def test_shared_modules_and_parameters_are_deduplicated_like_torch(torch):
    def tied(lib):
        shared = lib.nn.Linear(2, 2)
        seq = lib.nn.Sequential(shared, lib.nn.ReLU(), shared, lib.nn.Linear(2, 2))
        seq[3].weight = seq[0].weight
        return seq

    e, t = tied(ex), tied(torch)
    for kw in ({}, {"remove_duplicate": False}):
        assert [n for n, _ in e.named_parameters(**kw)] == [n for n, _ in t.named_parameters(**kw)], kw
        assert [n for n, _ in e.named_modules(**kw)] == [n for n, _ in t.named_modules(**kw)], kw
    assert list(e.state_dict()) == list(t.state_dict())
    assert [n for n, _ in e.named_children()] == [n for n, _ in t.named_children()]


def test_state_dict_values_share_memory_and_are_detached(pair):
    net_e, _ = pair
    sd = net_e.state_dict()
    assert not sd["head.2.weight"].requires_grad and not isinstance(sd["head.2.weight"], nn.Parameter)
    sd["head.2.weight"].numpy()[0, 0] = 42.0
    assert net_e.head[2].weight.numpy()[0, 0] == 42.0
    kept = net_e.state_dict(keep_vars=True)
    assert kept["head.2.weight"] is net_e.head[2].weight
    assert "stem.scratch" not in sd and "stem.scale" in sd
    assert sd["stem.bn.num_batches_tracked"].dtype == np.int64


def test_forward_and_gradients_match_torch_after_loading(torch, pair):
    net_e, net_t = pair
    net_e.eval()
    net_t.eval()
    x = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32)
    xe, xt = ex.tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    ye, yt = net_e(xe), net_t(xt)
    assert_close(ye.numpy(), yt.detach().numpy(), "output")
    ye.sum().backward()
    yt.sum().backward()
    assert_close(xe.grad.numpy(), xt.grad.numpy(), "input grad")
    for (n, p), (_, tp) in zip(net_e.named_parameters(), net_t.named_parameters()):
        assert_close(p.grad.numpy(), tp.grad.numpy(), f"grad of {n}")


# ----- load_state_dict ------------------------------------------------------------------------------
def test_load_state_dict_copies_into_existing_arrays_and_casts(torch):
    net = build(ex)
    arrays = {n: p.data for n, p in net.state_dict(keep_vars=True).items()}
    source = {k: np.full(v.shape, 0.25, dtype=np.float64) if v.dtype.kind == "f" else v.numpy().copy()
              for k, v in net.state_dict().items()}
    result = net.load_state_dict(source)
    assert result.missing_keys == [] and result.unexpected_keys == []
    assert repr(result) == "<All keys matched successfully>"
    for n, t in net.state_dict(keep_vars=True).items():
        assert t.data is arrays[n], n
        if t.dtype.kind == "f":
            assert t.dtype == np.float32 and np.all(t.numpy() == 0.25), n
    # excite Tensors are accepted too
    net.load_state_dict(build(ex).state_dict())


def _mutilate(sd):
    sd = OrderedDict(sd)
    del sd["stem.conv.weight"]
    del sd["head.2.bias"]
    sd["stem.extra"] = sd["stem.scale"]
    sd["nothere.weight"] = sd["stem.scale"]
    sd["head.2.weight"] = sd["head.2.weight"][:, :2]
    sd["stem.bn.running_mean"] = sd["stem.bn.running_mean"][:3]
    return sd


def test_load_state_dict_error_message_matches_torch(torch):
    net_t, net_e = build(torch), build(ex)
    bad = _mutilate(net_t.state_dict())
    with pytest.raises(RuntimeError) as torch_error:
        net_t.load_state_dict(bad)
    with pytest.raises(nn.StateDictError) as excite_error:
        net_e.load_state_dict({k: v.numpy() for k, v in bad.items()})
    assert isinstance(excite_error.value, RuntimeError) and isinstance(excite_error.value, ExciteError)
    assert str(excite_error.value) == str(torch_error.value)
    assert str(excite_error.value).startswith("Error(s) in loading state_dict for Net:\n\tMissing key(s)")


def test_load_state_dict_non_strict_reports_like_torch(torch):
    net_t, net_e = build(torch), build(ex)
    sd = net_t.state_dict()
    del sd["stem.conv.weight"]
    sd["stem.extra"] = sd["stem.scale"]
    expected = net_t.load_state_dict(sd, strict=False)
    got = net_e.load_state_dict({k: v.numpy() for k, v in sd.items()}, strict=False)
    assert got == tuple(expected)
    assert got.missing_keys == ["stem.conv.weight"] and got.unexpected_keys == ["stem.extra"]
    # a size mismatch is an error even when not strict
    sd["head.2.bias"] = sd["head.2.bias"][:1]
    with pytest.raises(RuntimeError) as te:
        net_t.load_state_dict(sd, strict=False)
    with pytest.raises(nn.StateDictError) as ee:
        net_e.load_state_dict({k: v.numpy() for k, v in sd.items()}, strict=False)
    assert str(ee.value) == str(te.value)


def test_missing_num_batches_tracked_is_tolerated_like_torch(torch):
    net_t, net_e = build(torch), build(ex)
    plain = {k: v for k, v in net_t.state_dict().items() if not k.endswith("num_batches_tracked")}
    assert net_t.load_state_dict(plain).missing_keys == []
    assert net_e.load_state_dict({k: v.numpy() for k, v in plain.items()}).missing_keys == []
    # a state_dict carrying version metadata (as our own and torch's do) must include it, as in torch
    sd_t, sd_e = net_t.state_dict(), net_e.state_dict()
    del sd_t["stem.bn.num_batches_tracked"], sd_e["stem.bn.num_batches_tracked"]
    with pytest.raises(RuntimeError) as te:
        net_t.load_state_dict(sd_t)
    with pytest.raises(nn.StateDictError) as ee:
        net_e.load_state_dict(sd_e)
    assert str(ee.value) == str(te.value)


def test_load_state_dict_rejects_non_array_values_and_non_dicts():
    net = build(ex)
    sd = dict(net.state_dict())
    sd["temperature"] = [1.0]
    with pytest.raises(nn.StateDictError, match='While copying the parameter named "temperature"'):
        net.load_state_dict(sd)
    with pytest.raises(TypeError):
        net.load_state_dict([("temperature", ex.ones(1))])


def test_load_state_dict_assign_replaces_parameters():
    net = build(ex)
    new = np.full((3, 4), 2.0, np.float32)
    sd = dict(net.state_dict())
    sd["head.2.weight"] = new
    net.load_state_dict(sd, assign=True)
    w = net.head[2].weight
    assert isinstance(w, nn.Parameter) and w.requires_grad and w.data is new


# ----- modes, dtype, grads, apply ---------------------------------------------------------------------
def test_train_eval_recurse_and_return_self(torch):
    net = build(ex)
    assert net.eval() is net
    assert all(not m.training for m in net.modules())
    assert net.train() is net and all(m.training for m in net.modules())
    net.head.eval()
    assert net.training and not net.head[1].training
    with pytest.raises(ValueError):
        net.train("yes")


def test_to_double_float_keep_objects_and_integer_buffers():
    net = build(ex)
    params = list(net.parameters())
    net(ex.randn(2, 3, 4, 4)).sum().backward()
    assert net.double() is net
    assert all(a is b for a, b in zip(net.parameters(), params))
    assert all(p.dtype == np.float64 and p.grad.dtype == np.float64 for p in net.parameters())
    assert net.stem.scale.dtype == np.float64 and net.stem.bn.num_batches_tracked.dtype == np.int64
    net.to(ex.float32)
    assert all(p.dtype == np.float32 for p in net.parameters())
    net.to("cpu", dtype=ex.float64)
    assert net.head[2].weight.dtype == np.float64
    net.to(ex.zeros(1))
    assert net.head[2].weight.dtype == np.float32
    assert net.float().to("cpu") is net
    with pytest.raises(TypeError):
        net.to(ex.int64)


def test_zero_grad_requires_grad_and_apply(torch):
    net = build(ex)
    net(ex.randn(2, 3, 4, 4)).sum().backward()
    net.zero_grad(set_to_none=False)
    assert all(p.grad is not None and not p.grad.numpy().any() for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())
    assert net.requires_grad_(False) is net and not any(p.requires_grad for p in net.parameters())
    net.requires_grad_()
    assert all(p.requires_grad for p in net.parameters())
    seen_e, seen_t = [], []
    assert net.apply(lambda m: seen_e.append(type(m).__name__)) is net
    build(torch).apply(lambda m: seen_t.append(type(m).__name__))
    assert seen_e == seen_t


# ----- repr ---------------------------------------------------------------------------------------------
def test_repr_matches_torch(pair):
    net_e, net_t = pair
    assert repr(net_e) == repr(net_t)


def test_parameter_repr_and_semantics(torch):
    p = nn.Parameter(ex.ones(2))
    assert repr(p) == repr(torch.nn.Parameter(torch.ones(2)))
    assert repr(nn.Parameter(ex.zeros(3))) == repr(torch.nn.Parameter(torch.zeros(3)))
    assert isinstance(p, ex.Tensor) and p.requires_grad and p.is_leaf
    arr = np.zeros(3, np.float32)
    shared = nn.Parameter(ex.from_numpy(arr))
    shared.data[0] = 1
    assert arr[0] == 1
    assert not nn.Parameter(ex.ones(2), requires_grad=False).requires_grad
    assert type(p * 2) is ex.Tensor
    with pytest.raises(ExciteError):
        nn.Parameter(ex.tensor([1, 2]))
    assert nn.Parameter().shape == (0,)


def test_deepcopy_and_pickle_keep_parameters():
    net = nn.Sequential(nn.Conv2dNormActivation(3, 8), nn.SqueezeExcitation(8, 2), nn.Flatten(), nn.Linear(8, 2))
    for clone in (copy.deepcopy(net), pickle.loads(pickle.dumps(net))):
        assert list(clone.state_dict()) == list(net.state_dict())
        for (n, a), b in zip(clone.named_parameters(), net.parameters()):
            assert isinstance(a, nn.Parameter) and a.requires_grad and a is not b, n
            np.testing.assert_array_equal(a.numpy(), b.numpy())
            assert not np.shares_memory(a.numpy(), b.numpy())


# ----- attribute protocol ---------------------------------------------------------------------------------
def test_getattr_delattr_and_lookup_errors_match_torch(torch):
    net_e, net_t = build(ex), build(torch)
    with pytest.raises(AttributeError) as ee:
        net_e.stem.nope
    with pytest.raises(AttributeError) as te:
        net_t.stem.nope
    assert str(ee.value) == str(te.value)
    del net_e.stem.alpha, net_t.stem.alpha
    del net_e.stem.scale, net_t.stem.scale
    del net_e.pool, net_t.pool
    assert list(net_e.state_dict()) == list(net_t.state_dict())
    assert net_e.get_submodule("stem.bn") is net_e.stem.bn
    assert net_e.get_parameter("head.2.weight") is net_e.head[2].weight
    assert net_e.get_buffer("stem.bn.running_var") is net_e.stem.bn.running_var
    with pytest.raises(AttributeError):
        net_e.get_submodule("stem.nothing")


def test_assignment_rules_match_torch(torch):
    def attempt(lib, action):
        net = build(lib)
        try:
            action(net, lib)
        except (TypeError, KeyError) as e:
            return "TypeError" if isinstance(e, TypeError) else "KeyError"
        return [n for n, _ in net.named_parameters()] + [n for n, _ in net.named_buffers()] + \
            [n for n, _ in net.named_modules()]

    actions = [
        lambda net, lib: setattr(net, "temperature", lib.ones(1)),  # plain tensor on a parameter name
        lambda net, lib: setattr(net, "head", 3),  # non-module on a module name
        lambda net, lib: setattr(net.stem, "scale", 3),  # non-tensor on a buffer name
        lambda net, lib: setattr(net, "temperature", None),  # None keeps the slot, drops the value
        lambda net, lib: setattr(net, "head", lib.nn.Identity()),  # replace a child
        lambda net, lib: setattr(net, "pool", lib.nn.Parameter(lib.ones(1))),  # module -> parameter
        lambda net, lib: net.register_buffer("a.b", lib.ones(1)),
        lambda net, lib: net.register_buffer("head", lib.ones(1)),
        lambda net, lib: net.register_parameter("pool", lib.nn.Parameter(lib.ones(1))),
        lambda net, lib: net.add_module("temperature", lib.nn.ReLU()),
    ]
    for i, action in enumerate(actions):
        assert attempt(ex, action) == attempt(torch, action), f"action {i}"


def test_forward_hooks():
    lin = nn.Linear(2, 2)
    calls = []
    pre = lin.register_forward_pre_hook(lambda m, args: (args[0] * 2,))
    post = lin.register_forward_hook(lambda m, args, out: calls.append(out.shape) or out * 0)
    x = ex.ones(1, 2)
    assert not lin(x).numpy().any() and calls == [(1, 2)]
    pre.remove()
    post.remove()
    np.testing.assert_allclose(lin(x).numpy(), (x.numpy() @ lin.weight.numpy().T) + lin.bias.numpy())


def test_base_module_forward_is_required():
    with pytest.raises(NotImplementedError, match="forward"):
        nn.Module()(ex.ones(1))


# ----- containers ------------------------------------------------------------------------------------------
def _sequential_script(lib):
    tnn = lib.nn
    s = tnn.Sequential(tnn.Linear(2, 3), tnn.ReLU(), tnn.Linear(3, 4))
    snapshots = [repr(s)]
    s.append(tnn.Sigmoid())
    s.insert(1, tnn.Identity())
    s.insert(-1, tnn.Tanh())
    s.extend([tnn.ReLU6()])
    snapshots.append(repr(s))
    del s[2]
    del s[1:3]
    snapshots.append(repr(s))
    snapshots.append(repr(s[-1]) + repr(s[1:]) + repr(s[::2]) + str(len(s)))
    snapshots.append(repr(s.pop(0)) + repr(s))
    s[0] = tnn.Linear(3, 5)
    snapshots.append(repr(s) + repr(s + tnn.Sequential(tnn.ReLU())) + repr(s * 2))
    s += tnn.Sequential(tnn.Hardswish())
    named = tnn.Sequential(OrderedDict([("conv", tnn.Conv2d(1, 2, 1)), ("act", tnn.SiLU())]))
    snapshots += [repr(s), repr(named), str(list(named.state_dict())), repr(named[0:1]),
                  str([type(m).__name__ for m in named])]
    return snapshots


def test_sequential_operations_match_torch(torch):
    for i, (got, expected) in enumerate(zip(_sequential_script(ex), _sequential_script(torch))):
        assert got == expected, f"snapshot {i}"


def test_sequential_index_errors_and_forward(torch):
    s = nn.Sequential(nn.Linear(2, 2), nn.ReLU())
    with pytest.raises(IndexError, match="index 2 is out of range"):
        s[2]
    with pytest.raises(IndexError):
        s[-3]
    x = ex.randn(3, 2)
    np.testing.assert_array_equal(s(x).numpy(), s[1](s[0](x)).numpy())
    assert nn.Sequential()(x) is x


def _modulelist_script(lib):
    tnn = lib.nn
    ml = tnn.ModuleList([tnn.Linear(2, 2) for _ in range(3)] + [tnn.ReLU(), tnn.ReLU(), tnn.Linear(2, 3)])
    snapshots = [repr(ml), str(len(ml)), repr(ml[-1]), repr(ml[1:3]), str(list(ml.state_dict()))]
    ml.append(tnn.Sigmoid())
    ml.insert(0, tnn.Tanh())
    ml.extend([tnn.Identity()])
    del ml[1]
    ml[0] = tnn.SiLU()
    ml += [tnn.ReLU6()]
    snapshots += [repr(ml), repr(ml + tnn.ModuleList([tnn.ReLU()])), repr(ml.pop(-1)), repr(ml),
                  repr(tnn.ModuleList())]
    return snapshots


def test_modulelist_operations_match_torch(torch):
    for i, (got, expected) in enumerate(zip(_modulelist_script(ex), _modulelist_script(torch))):
        assert got == expected, f"snapshot {i}"
