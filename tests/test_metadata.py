"""Metadata travels with the weights: architecture, class names and preprocessing in .pth, .safetensors and ONNX.

Budget: about 10 s (one tiny digits run, two conversions, one export, onnxruntime predictions).
"""
import contextlib
import io
import json

import numpy as np
import pytest
from PIL import Image

import excite as ex
from excite.app import metadata
from excite.app.cli import main
from excite.app.train import TrainConfig, Trainer


def _main(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """A 1-epoch run on a 2-class ImageFolder (class names that are not indices), and an image of each class."""
    root = tmp_path_factory.mktemp("meta")
    rng = np.random.default_rng(0)
    for cls, value in (("dark", 30), ("light", 225)):
        folder = root / "data" / cls
        folder.mkdir(parents=True)
        for i in range(12):
            Image.fromarray(np.clip(value + rng.normal(0, 15, (20, 20, 3)), 0, 255).astype(np.uint8)).save(
                folder / f"{i}.png")
    Trainer(TrainConfig(data=str(root / "data"), epochs=1, image_size=16, batch_size=4, workers=0), root / "run",
            log=lambda m: None, progress=False).run()
    return root


def test_strings_round_trip():
    meta = dict(model="mobilenet_v3_small", num_classes=2, class_names=["a b", "ünï"], image_size=224,
                resize_size=256, interpolation="bicubic", mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25],
                grayscale=False)
    strings = metadata.to_strings(meta)
    assert all(isinstance(k, str) and isinstance(v, str) for k, v in strings.items())
    assert strings["excite.model"] == "mobilenet_v3_small" and json.loads(strings["excite.class_names"]) == ["a b", "ünï"]
    assert metadata.from_strings(strings) == meta
    assert metadata.from_strings({"format": "pt"}) is None


def test_metadata_survives_pth_to_safetensors_to_pth(trained, tmp_path, torch):
    last = trained / "run" / "last.pth"
    recorded = ex.load(last)["meta"]
    code, out, err = _main("convert", str(last), str(tmp_path / "w.safetensors"))
    assert code == 0, err
    stored = ex.io.load_metadata(tmp_path / "w.safetensors")
    assert metadata.from_strings(stored) == {k: recorded[k] for k in metadata.KEYS}
    from safetensors import safe_open  # the safetensors package reads the same header

    with safe_open(str(tmp_path / "w.safetensors"), "numpy") as f:
        assert f.metadata() == stored
    code, _, err = _main("convert", str(tmp_path / "w.safetensors"), str(tmp_path / "back.pth"))
    assert code == 0, err
    back = torch.load(tmp_path / "back.pth", weights_only=True)  # plain data torch reads
    assert back["format"] == metadata.WEIGHTS_FORMAT and back["meta"]["class_names"] == ["dark", "light"]
    weights = ex.load(last)["model"]
    assert list(back["model"]) == list(weights)
    assert all(np.array_equal(back["model"][k].numpy(), weights[k].numpy()) for k in weights)
    # best.pth (a bare state_dict, its metadata in run.json beside it) converts with the metadata too
    code, _, err = _main("convert", str(trained / "run" / "best.pth"), str(tmp_path / "best.safetensors"))
    assert code == 0, err
    assert metadata.from_strings(ex.io.load_metadata(tmp_path / "best.safetensors"))["class_names"] == ["dark", "light"]
    # each file predicts with the class names, away from its run folder
    image = trained / "data" / "light" / "0.png"
    for path in (tmp_path / "w.safetensors", tmp_path / "back.pth"):
        code, out, err = _main("predict", str(path), str(image), "--json", "--topk", "1")
        assert code == 0, err
        assert json.loads(out)[0]["top"][0]["class"] in ("dark", "light")


def test_export_writes_metadata_props_and_predict_runs_the_onnx_file_with_class_names(trained, tmp_path):
    onnx = pytest.importorskip("onnx")
    pytest.importorskip("onnxruntime")
    graph = tmp_path / "model.onnx"
    code, out, err = _main("export", str(trained / "run" / "last.pth"), str(graph))
    assert code == 0, err
    assert "2 class names and the preprocessing in its metadata" in out
    props = {p.key: p.value for p in onnx.load(str(graph)).metadata_props}
    meta = metadata.from_strings(props)
    assert meta["class_names"] == ["dark", "light"] and meta["image_size"] == 16 and meta["model"] == "mobilenet_v3_digits"
    images = [str(trained / "data" / c / "1.png") for c in ("dark", "light")]
    code, out, err = _main("predict", str(graph), *images, "--json")
    assert code == 0, err
    from_onnx = json.loads(out)
    code, out, err = _main("predict", str(trained / "run" / "last.pth"), *images, "--json")
    from_excite = json.loads(out)
    assert [r["top"][0]["class"] for r in from_onnx] == [r["top"][0]["class"] for r in from_excite]
    np.testing.assert_allclose([t["probability"] for r in from_onnx for t in r["top"]],
                               [t["probability"] for r in from_excite for t in r["top"]], rtol=1e-4, atol=1e-5)


def test_export_metadata_argument_is_checked(tmp_path):
    pytest.importorskip("onnx")
    from excite.onnx import export

    model = ex.nn.Linear(3, 2)
    with pytest.raises(ex.InvalidArgumentError, match="metadata must be a dict of str -> str"):
        export(model, np.zeros((1, 3), np.float32), tmp_path / "m.onnx", metadata={"n": 3})
    proto = export(model, np.zeros((1, 3), np.float32), tmp_path / "m.onnx", metadata={"classes": "[\"a\", \"b\"]"})
    assert {p.key: p.value for p in proto.metadata_props}["classes"] == "[\"a\", \"b\"]"


def test_save_metadata_only_for_safetensors(tmp_path):
    state = {"w": ex.tensor(np.ones(2, np.float32))}
    with pytest.raises(ex.InvalidArgumentError, match="only in safetensors"):
        ex.save(state, tmp_path / "w.pth", metadata={"a": "b"})
    with pytest.raises(ex.InvalidArgumentError, match="dict of str -> str"):
        ex.save(state, tmp_path / "w.safetensors", metadata={"a": 1})
    ex.save(state, tmp_path / "w.pth")
    assert ex.io.load_metadata(tmp_path / "w.pth") == {}
