"""The small frictions of issue 13, point 8, each with the one-line error (or the right behaviour) it gets now.

bench --threads -3 / --case nosuchcase / --reps 0; a missing output folder; convert to an unknown suffix;
export --static-batch's printed shape; --resume picking the latest run; failed runs leaving empty folders;
hand-placed cache files hash-checked; Module.half(); predict with some unreadable images.
Budget: about 5 s (in-process CLI calls, no training but one tiny failing run).
"""
import contextlib
import hashlib
import io
import os

import numpy as np
import pytest
from PIL import Image

import excite as ex
from excite.app.cli import main


def _main(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


def _one_line(code, err, *fragments, expected_code=1):
    assert code == expected_code, err
    assert err.startswith("excite: error: ") and err.count("\n") == 1 and "Traceback" not in err, err
    for fragment in fragments:
        assert fragment in err, err


@pytest.mark.parametrize("argv, fragments", [
    (["--threads", "-3"], ["argument --threads: must be >= 1, got -3"]),
    (["--threads", "two"], ["argument --threads: expected an integer"]),
    (["--reps", "0"], ["argument --reps: must be >= 1, got 0"]),
    (["--case", "nosuchcase"], ["unknown case 'nosuchcase'", "se_fwd_8x96x28x28", "import_s"]),
    (["--quick", "--case", "train_efficientnet_b0_b16"], ["in the --quick subset"]),
])
def test_bench_rejects_bad_arguments_in_one_line(argv, fragments):
    code, out, err = _main("bench", *argv)
    _one_line(code, err, *fragments, expected_code=2)
    assert out == ""  # nothing ran


def test_a_missing_output_folder_is_named_not_a_temporary_file(tmp_path):
    ex.save({"w": ex.tensor(np.ones(2, np.float32))}, tmp_path / "w.pth")
    missing = tmp_path / "nope" / "out.safetensors"
    code, _, err = _main("convert", str(tmp_path / "w.pth"), str(missing))
    _one_line(code, err, "no such directory:", "nope")
    assert ".tmp" not in err
    code, _, err = _main("export", "mobilenet_v3_digits", str(tmp_path / "nope" / "m.onnx"))
    _one_line(code, err, "no such directory:")


def test_convert_refuses_an_unknown_output_suffix(tmp_path):
    ex.save({"w": ex.tensor(np.ones(2, np.float32))}, tmp_path / "best.pth")
    code, _, err = _main("convert", str(tmp_path / "best.pth"), str(tmp_path / "out.txt"))
    _one_line(code, err, "OUT must end in .pth", ".safetensors", "out.txt")
    assert not (tmp_path / "out.txt").exists()
    code, _, err = _main("export", "mobilenet_v3_digits", str(tmp_path / "m.txt"))
    _one_line(code, err, "OUT.onnx must end in .onnx")


def test_export_prints_the_batch_dimension_it_wrote(tmp_path):
    onnx = pytest.importorskip("onnx")
    code, out, err = _main("export", "mobilenet_v3_digits", str(tmp_path / "s.onnx"), "--static-batch")
    assert code == 0, err
    assert "[1, 3, 32, 32]" in out
    dims = onnx.load(str(tmp_path / "s.onnx")).graph.input[0].type.tensor_type.shape.dim
    assert [d.dim_value for d in dims] == [1, 3, 32, 32]
    code, out, err = _main("export", "mobilenet_v3_digits", str(tmp_path / "d.onnx"))
    assert code == 0 and "[N, 3, 32, 32]" in out


def test_resume_without_a_path_continues_the_most_recent_run(tmp_path, monkeypatch):
    """runs/excite finished earlier; runs/excite2 is newer: --resume continues excite2, not the older one."""
    from excite.app import train

    monkeypatch.chdir(tmp_path)
    for name, when in (("excite", 1_000), ("excite2", 2_000)):
        code, _, err = _main("train", "--epochs", "1", "--limit", "16", "--image-size", "16", "--batch-size", "8",
                             "--out", os.path.join("runs", name), "--no-progress")
        assert code == 0, err
        for path in (tmp_path / "runs" / name).iterdir():
            os.utime(path, (when, when))
        os.utime(tmp_path / "runs" / name, (when, when))
    assert train.latest_run(train.DEFAULT_OUT) == str(tmp_path / "runs" / "excite2")
    code, out, err = _main("train", "--resume", "--epochs", "2", "--no-progress")
    assert code == 0, err
    assert ex.load(tmp_path / "runs" / "excite2" / "last.pth")["epoch"] == 2
    assert ex.load(tmp_path / "runs" / "excite" / "last.pth")["epoch"] == 1


def test_a_failed_run_leaves_no_empty_run_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "data" / "a").mkdir(parents=True)
    (tmp_path / "data" / "b").mkdir(parents=True)
    for cls in ("a", "b"):
        for i in range(4):
            (tmp_path / "data" / cls / f"{i}.png").write_bytes(b"not an image at all")
    code, _, err = _main("train", "--data", "data", "--epochs", "1", "--image-size", "16", "--workers", "0",
                         "--no-progress")
    lines = err.strip().splitlines()
    assert code == 1 and all(line.startswith("warning: skipping unreadable image ") for line in lines[:-1])
    assert "(Pillow cannot identify its format)" in lines[0]
    _one_line(code, lines[-1] + "\n", "no training image of epoch 1 could be read")
    assert not (tmp_path / "runs" / "excite").exists()


def test_a_weights_file_placed_by_hand_in_the_cache_is_hash_checked(tmp_path, monkeypatch):
    from excite.io import hub

    monkeypatch.setenv("EXCITE_HOME", str(tmp_path))
    monkeypatch.setattr(hub, "_verified", {})
    cache = tmp_path / "checkpoints"
    cache.mkdir()
    ex.save({"w": ex.tensor(np.arange(3, dtype=np.float32))}, cache / "tmp.pth")
    digest = hashlib.sha256((cache / "tmp.pth").read_bytes()).hexdigest()
    good = f"tiny-{digest[:8]}.pth"
    os.rename(cache / "tmp.pth", cache / good)
    url = "http://127.0.0.1:9/never-contacted/"  # a cached file is never downloaded
    assert hub.load_state_dict_from_url(url + good, progress=False)["w"].tolist() == [0.0, 1.0, 2.0]
    bad = "tiny-deadbeef.pth"
    (cache / bad).write_bytes((cache / good).read_bytes())
    with pytest.raises(ex.CheckpointError, match="does not match its name: expected sha256 prefix deadbeef"):
        hub.load_state_dict_from_url(url + bad, progress=False)
    assert hub.load_state_dict_from_url(url + bad, progress=False, check_hash=False)["w"].tolist() == [0.0, 1.0, 2.0]
    # the same check through the weights registry's names: a file under the official name must match its hash
    from excite.vision import models

    entry = models.MobileNet_V3_Small_Weights.DEFAULT
    (cache / entry.file_name).write_bytes((cache / good).read_bytes())
    with pytest.raises(ex.CheckpointError, match=f"expected sha256 prefix {entry.sha256_prefix}"):
        models.mobilenet_v3_small(weights="DEFAULT", progress=False)


def test_module_half_is_refused_with_a_clear_error():
    model = ex.vision.models.mobilenet_v3_digits()
    for cast in (model.half, lambda: model.to(np.float16), lambda: model.to(dtype="bfloat16")):
        with pytest.raises(ex.InvalidArgumentError, match="excite runs modules in float32 or float64"):
            cast()
    assert all(p.dtype == np.float32 for p in model.parameters())  # nothing was cast
    assert model.double().features[0][0].weight.dtype == np.float64


def test_predict_reports_unreadable_images_and_still_predicts_the_rest(tmp_path):
    ex.save(ex.vision.models.mobilenet_v3_digits(num_classes=3).state_dict(), tmp_path / "w.pth")
    good = tmp_path / "good.png"
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (20, 20, 3), dtype=np.uint8)).save(good)
    bad = tmp_path / "bad.jpg"
    bad.write_bytes(b"garbage")
    code, out, err = _main("predict", str(tmp_path / "w.pth"), "--model", "mobilenet_v3_digits", str(bad),
                           str(good), str(tmp_path / "missing.png"))
    assert code == 1
    assert out.startswith(str(good)) and "1. " in out
    lines = err.strip().splitlines()
    assert len(lines) == 3 and "bad.jpg is not an image" in lines[0] and "no such file" in lines[1]
    assert lines[2] == "excite: 2 of 3 images could not be read (listed above)"
    code, _, err = _main("predict", str(tmp_path / "w.pth"), "--model", "mobilenet_v3_digits", str(bad))
    _one_line(code, err, "bad.jpg is not an image")


def test_onnx_files_are_refused_where_only_weights_make_sense(tmp_path):
    pytest.importorskip("onnx")
    graph = tmp_path / "m.onnx"
    code, _, err = _main("export", "mobilenet_v3_digits", str(graph))
    assert code == 0, err
    code, _, err = _main("info", str(graph))
    _one_line(code, err, "is an ONNX graph")
    code, _, err = _main("train", "--weights", str(graph), "--out", str(tmp_path / "run"))
    _one_line(code, err, "an ONNX graph cannot be trained")
    assert not (tmp_path / "run").exists()
