"""Pretrained weights: the registry checked against torchvision's, and the download cache over a local HTTP server.

The end-to-end test runs excite in a subprocess that never imports torch: it downloads a
torchvision checkpoint from 127.0.0.1 through ``mobilenet_v3_small(weights="DEFAULT")`` and must
reproduce torchvision's logits. Budget: ~12 s.
"""
import functools
import hashlib
import http.server
import json
import os
import socket
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest
from PIL import Image

import excite as ex
from excite.io import hub
from excite.vision import weights

MODELS = ["mobilenet_v3_small", "mobilenet_v3_large"] + [f"efficientnet_b{i}" for i in range(8)] + \
    ["efficientnet_v2_s", "efficientnet_v2_m", "efficientnet_v2_l"] + \
    [f"regnet_y_{size}" for size in ("400mf", "800mf", "1_6gf", "3_2gf", "8gf", "16gf", "32gf", "128gf")] + \
    ["maxvit_t"]


# ===== the registry against torchvision ====================================================
@pytest.mark.parametrize("model", MODELS)
def test_registry_matches_torchvision(torchvision, model):
    theirs = torchvision.models.get_model_weights(model)
    ours = weights.get_model_weights(model)
    assert ours.__name__ == theirs.__name__
    assert [e.name for e in ours] == [e.name for e in theirs]
    assert ours.DEFAULT.name == theirs.DEFAULT.name
    for entry in ours:
        reference = theirs[entry.name]
        assert entry.url == reference.url
        assert entry.sha256_prefix == reference.url.rsplit("-", 1)[1].split(".")[0]
        assert entry.num_classes == len(reference.meta["categories"]) == 1000
        assert list(entry.meta["categories"]) == reference.meta["categories"]
        for key in ("num_params", "min_size", "recipe", "_metrics", "_ops", "_file_size"):
            assert entry.meta[key] == reference.meta[key], key
        assert entry.meta.get("license") == reference.meta.get("license")  # the SWAG weights carry one
        ours_t, theirs_t = entry.transforms(), reference.transforms()
        assert (ours_t.crop_size, ours_t.resize_size, ours_t.mean, ours_t.std, ours_t.antialias) == \
            (theirs_t.crop_size, theirs_t.resize_size, theirs_t.mean, theirs_t.std, theirs_t.antialias)
        assert ours_t.interpolation == theirs_t.interpolation.value
        assert repr(ours_t) == repr(theirs_t)


@pytest.mark.parametrize("model, entry", [("efficientnet_b0", "IMAGENET1K_V1"), ("mobilenet_v3_large", "IMAGENET1K_V2"),
                                          ("regnet_y_16gf", "IMAGENET1K_SWAG_E2E_V1")])
def test_preprocessing_matches_torchvision(torchvision, model, entry):
    rng = np.random.default_rng(0)
    image = Image.fromarray(rng.integers(0, 256, (300, 280, 3), dtype=np.uint8))
    ours = weights.resolve(model, entry).transforms()(image)
    theirs = torchvision.models.get_model_weights(model)[entry].transforms()(image)
    assert ours.shape == tuple(theirs.shape)
    np.testing.assert_allclose(ours.data, theirs.numpy(), rtol=0, atol=1e-5)


def test_resolve_accepts_torchvision_spellings():
    family = weights.MobileNet_V3_Large_Weights
    assert weights.resolve("mobilenet_v3_large", None) is None
    assert weights.resolve("mobilenet_v3_large", "DEFAULT") is family.IMAGENET1K_V2
    assert weights.resolve("mobilenet_v3_large", "IMAGENET1K_V1") is family.IMAGENET1K_V1
    assert weights.resolve("mobilenet_v3_large", "MobileNet_V3_Large_Weights.IMAGENET1K_V1") is family.IMAGENET1K_V1
    assert weights.resolve("mobilenet_v3_large", family.IMAGENET1K_V1) is family.IMAGENET1K_V1
    assert weights.get_weight("EfficientNet_B1_Weights.IMAGENET1K_V2") is weights.EfficientNet_B1_Weights.DEFAULT
    entry = weights.resolve("efficientnet_b0", "DEFAULT")
    assert (entry.url, entry.sha256_prefix, entry.num_classes) == (
        "https://download.pytorch.org/models/efficientnet_b0_rwightman-7f5810bc.pth", "7f5810bc", 1000)


def test_resolve_errors_list_the_valid_names():
    with pytest.raises(ex.InvalidArgumentError, match="valid: DEFAULT, IMAGENET1K_V1, IMAGENET1K_V2"):
        weights.resolve("mobilenet_v3_large", "IMAGENET1K_V3")
    with pytest.raises(ex.InvalidArgumentError, match="belong to mobilenet_v3_small"):
        weights.resolve("efficientnet_b0", weights.MobileNet_V3_Small_Weights.DEFAULT)
    with pytest.raises(ex.InvalidArgumentError, match="no pretrained weights are registered for model 'resnet50'"):
        weights.resolve("resnet50", "DEFAULT")
    with pytest.raises(ex.InvalidArgumentError, match="valid"):
        weights.resolve("efficientnet_b0", True)


# ===== downloads from a local HTTP server ====================================================
class LocalServer:
    """A static file server on 127.0.0.1 (ephemeral port) that records every request path."""

    def __init__(self, directory):
        self.requests = []
        requests = self.requests

        class Handler(http.server.SimpleHTTPRequestHandler):
            def do_GET(self):
                requests.append(self.path)
                super().do_GET()

            def log_message(self, *args):
                pass

        self.httpd = http.server.ThreadingHTTPServer(("127.0.0.1", 0),
                                                     functools.partial(Handler, directory=str(directory)))
        self.thread = threading.Thread(target=self.httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self.thread.start()

    def url(self, name):
        return f"http://127.0.0.1:{self.httpd.server_address[1]}/{name}"

    def close(self):
        self.httpd.shutdown()
        self.httpd.server_close()
        self.thread.join()


@pytest.fixture
def served(tmp_path):
    (tmp_path / "served").mkdir()
    server = LocalServer(tmp_path / "served")
    yield server, tmp_path / "served"
    server.close()


@pytest.fixture
def excite_home(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("EXCITE_HOME", str(home))
    return home


def torch_checkpoint(torch, directory, stem, state):
    """torch.save ``state`` as ``<stem>-<sha256 prefix>.pth``, torchvision's naming; returns the file name."""
    torch.save(state, directory / "tmp.pth")
    digest = hashlib.sha256((directory / "tmp.pth").read_bytes()).hexdigest()
    name = f"{stem}-{digest[:8]}.pth"
    (directory / "tmp.pth").rename(directory / name)
    return name


def test_download_verifies_caches_and_reuses(torch, served, excite_home):
    server, directory = served
    state = {"w": torch.randn(3, 2), "n": torch.tensor(4)}
    name = torch_checkpoint(torch, directory, "tiny", state)
    loaded = hub.load_state_dict_from_url(server.url(name), progress=False)
    assert np.array_equal(loaded["w"].data, state["w"].numpy()) and loaded["n"].item() == 4
    cached = excite_home / "checkpoints" / name
    assert cached.read_bytes() == (directory / name).read_bytes()
    assert server.requests == [f"/{name}"]
    again = hub.load_state_dict_from_url(server.url(name), progress=False)
    assert np.array_equal(again["w"].data, state["w"].numpy())
    assert server.requests == [f"/{name}"]  # served from the cache, no second request
    assert os.listdir(excite_home / "checkpoints") == [name]


def test_wrong_hash_raises_and_leaves_no_file(torch, served, excite_home):
    server, directory = served
    torch.save({"w": torch.ones(2)}, directory / "tiny-deadbeef.pth")
    with pytest.raises(ex.CheckpointError, match="invalid hash value.*expected sha256 prefix deadbeef"):
        hub.load_state_dict_from_url(server.url("tiny-deadbeef.pth"), progress=True)
    assert os.listdir(excite_home / "checkpoints") == []
    # check_hash=False accepts the same file
    assert hub.load_state_dict_from_url(server.url("tiny-deadbeef.pth"), progress=False,
                                        check_hash=False)["w"].tolist() == [1.0, 1.0]


def test_unreachable_url_names_the_url_and_where_to_put_the_file(excite_home):
    with socket.socket() as probe:  # a port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    url = f"http://127.0.0.1:{port}/models/mobilenet_v3_small-047dcff4.pth"
    with pytest.raises(hub.DownloadError) as error:
        hub.load_state_dict_from_url(url, progress=False)
    message = str(error.value)
    assert url in message
    assert str(excite_home / "checkpoints" / "mobilenet_v3_small-047dcff4.pth") in message
    assert not (excite_home / "checkpoints" / "mobilenet_v3_small-047dcff4.pth").exists()


def test_missing_file_on_server_is_a_download_error(served, excite_home):
    server, _ = served
    with pytest.raises(hub.DownloadError, match="HTTP 404"):
        hub.load_state_dict_from_url(server.url("absent-00000000.pth"), progress=False)


def test_model_dir_and_file_name(torch, served, tmp_path, excite_home):
    server, directory = served
    name = torch_checkpoint(torch, directory, "tiny", {"w": torch.zeros(1)})
    hub.load_state_dict_from_url(server.url(name), model_dir=tmp_path / "elsewhere", file_name="renamed.pth",
                                 progress=False)
    assert (tmp_path / "elsewhere" / "renamed.pth").exists() and not (excite_home / "checkpoints").exists()


# ===== end to end: torchvision's checkpoint -> excite's model, no torch in the process ========
def randomise_batch_norm(torch, model, resolution, seed=0):
    """BatchNorm statistics from one calibration batch, then perturbed, so eps and stats mistakes show."""
    gen = torch.Generator().manual_seed(seed)
    norms = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    model.eval()
    with torch.no_grad():
        for m in norms:
            m.weight.copy_(torch.empty(m.num_features).uniform_(0.5, 1.5, generator=gen))
            m.bias.copy_(0.2 * torch.randn(m.num_features, generator=gen))
            m.reset_running_stats()
            m.momentum = None  # cumulative: after one batch the statistics are that batch's
            m.train()
        model(torch.randn(2, 3, resolution, resolution, generator=gen))
        for m in norms:
            m.running_mean.add_(0.1 * m.running_var.sqrt() * torch.randn(m.num_features, generator=gen))
            m.running_var.mul_(torch.empty(m.num_features).uniform_(0.8, 1.25, generator=gen))
    model.eval()


_NO_TORCH_SCRIPT = textwrap.dedent("""
    import json, sys
    import numpy as np
    import excite as ex
    from excite.vision import models, weights

    config = json.loads(sys.argv[1])
    entry = weights.MobileNet_V3_Small_Weights.DEFAULT
    entry.value.url = config["url"]  # the registry's entry, pointed at the local server (as torchvision's Weights)
    model = models.mobilenet_v3_small(weights="DEFAULT", progress=False).eval()
    x = ex.from_numpy(np.load(config["input"]))
    with ex.no_grad():
        logits = model(x).numpy()
    expected = np.load(config["logits"])
    error = float(np.max(np.abs(logits - expected)) / np.max(np.abs(expected)))
    # the cached file also loads directly, into a fresh model
    state = ex.load(config["cached"])
    fresh = models.mobilenet_v3_small().eval()
    fresh.load_state_dict(state)
    with ex.no_grad():
        direct = float(np.max(np.abs(fresh(x).numpy() - logits)))
    leaked = sorted(m for m in sys.modules if m.split(".")[0] in ("torch", "torchvision"))
    print(json.dumps({"error": error, "direct": direct, "leaked": leaked, "keys": len(state)}))
""")


def test_pretrained_mobilenet_without_torch_matches_torchvision_logits(torch, torchvision, served, tmp_path):
    server, directory = served
    torch.manual_seed(0)
    reference = torchvision.models.mobilenet_v3_small()
    randomise_batch_norm(torch, reference, 96)
    x = torch.randn(2, 3, 96, 96, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        logits = reference(x)
    name = torch_checkpoint(torch, directory, "mobilenet_v3_small", reference.state_dict())
    np.save(tmp_path / "input.npy", x.numpy())
    np.save(tmp_path / "logits.npy", logits.numpy())
    home = tmp_path / "subprocess-home"
    config = {"url": server.url(name), "input": str(tmp_path / "input.npy"), "logits": str(tmp_path / "logits.npy"),
              "cached": str(home / "checkpoints" / name)}
    env = dict(os.environ, EXCITE_HOME=str(home))
    done = subprocess.run([sys.executable, "-c", _NO_TORCH_SCRIPT, json.dumps(config)], env=env,
                          capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr
    report = json.loads(done.stdout.strip().splitlines()[-1])
    assert report["leaked"] == []  # torch was never imported
    assert report["error"] <= 1e-4, report
    assert report["direct"] == 0.0 and report["keys"] == len(reference.state_dict())
    assert server.requests == [f"/{name}"]


# ===== the enums under torchvision's names ====================================================
@pytest.mark.parametrize("model", MODELS)
def test_weights_enums_behave_like_torchvision(torchvision, model):
    from excite.vision import models

    theirs = torchvision.models.get_model_weights(model)
    ours = getattr(models, theirs.__name__)  # importable from excite.vision.models, as from torchvision.models
    assert ours is models.get_model_weights(model) is models.get_model_weights(getattr(models, model))
    assert issubclass(ours, models.WeightsEnum)
    assert list(ours.__members__) == list(theirs.__members__)  # DEFAULT included, as an alias
    assert [m.name for m in ours] == [m.name for m in theirs]  # iteration skips the alias
    assert ours.DEFAULT is ours[theirs.DEFAULT.name] and ours.DEFAULT.name == theirs.DEFAULT.name
    for name in theirs.__members__:
        a, b = ours[name], theirs[name]
        assert (repr(a), str(a), a.url) == (repr(b), str(b), b.url)
        assert list(a.meta["categories"]) == b.meta["categories"]
        assert repr(a.transforms()) == repr(b.transforms())
        assert models.get_weight(f"{theirs.__name__}.{name}") is a
        assert ours.verify(name) is a and ours.verify(f"{theirs.__name__}.{name}") is a
    assert weights.resolve(model, ours.DEFAULT) is ours.DEFAULT


def test_weights_enum_members_pickle_by_name_and_builders_accept_them(monkeypatch):
    import pickle

    from excite.vision import models

    member = models.MobileNet_V3_Small_Weights.DEFAULT
    assert pickle.loads(pickle.dumps(member)) is member
    reference = models.mobilenet_v3_small()
    monkeypatch.setattr(models.WeightsEnum, "get_state_dict", lambda self, progress=True, check_hash=True:
                        reference.state_dict())
    built = models.mobilenet_v3_small(weights=member, progress=False)
    assert all(np.array_equal(a.data, b.data) for a, b in zip(built.state_dict().values(),
                                                               reference.state_dict().values()))
    with pytest.raises(ex.InvalidArgumentError, match="belong to mobilenet_v3_small, not efficientnet_b0"):
        models.efficientnet_b0(weights=member)
    with pytest.raises(ex.InvalidArgumentError, match="num_classes"):
        models.mobilenet_v3_small(weights=member, num_classes=3)


def test_added_table_rows_get_enum_members_without_other_code(monkeypatch):
    """Engineers add models as rows of weights._TABLE; the enums follow from the rows alone."""
    row = ("mobilenet_v3_small", "MobileNet_V3_Small_Weights", "IMAGENET1K_V9", "mobilenet_v3_small-00000000.pth",
           200, 230, "bilinear", 1, (1, 1), 1.0, 2.0, 0.1, 1.0, "recipe", "docs")
    monkeypatch.setattr(weights, "_TABLE", weights._TABLE + [row])
    rebuilt = weights._build_registry()["mobilenet_v3_small"]
    assert [m.name for m in rebuilt] == ["IMAGENET1K_V1", "IMAGENET1K_V9"]
    assert rebuilt.IMAGENET1K_V9.transforms().crop_size == [200] and rebuilt.DEFAULT is rebuilt.IMAGENET1K_V1
