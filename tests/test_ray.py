"""Batch inference on Ray Data (a local Ray of 2 CPUs): `excite predict --ray` over a few hundred generated images
in nested folders, one of them corrupt, writes the same predictions as single-process `excite predict`, and
reports the corrupt file in its row; `ExcitePredictor` on `ray.data.read_images` agrees too."""
import faulthandler
import signal

import numpy as np
import pytest

import excite as ex

ray = pytest.importorskip("ray")
pq = pytest.importorskip("pyarrow.parquet")
CLASSES = ["apple", "bus", "cat", "dog"]


TEST_TIMEOUT = 120  # seconds per test (each takes < 20 s): a Ray job that hangs fails its test
MODULE_TIMEOUT = 300  # the backstop for a hang that an exception cannot interrupt: the stacks printed, the run ended


@pytest.fixture(autouse=True)
def timeout():
    def expire(signum, frame):
        raise TimeoutError(f"the test ran past its {TEST_TIMEOUT} s timeout (a Ray job hung?)")

    previous = signal.signal(signal.SIGALRM, expire)
    signal.alarm(TEST_TIMEOUT)
    try:
        yield
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)


@pytest.fixture(scope="module")
def local_ray():
    faulthandler.dump_traceback_later(MODULE_TIMEOUT, exit=True)
    try:
        ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
        ray.data.DataContext.get_current().enable_progress_bars = False
        yield
        ray.shutdown()
    finally:
        faulthandler.cancel_dump_traceback_later()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory):
    from excite.app.metadata import weights_file
    from excite.vision.models import mobilenet_v3_small

    ex.manual_seed(3)
    model = mobilenet_v3_small(num_classes=len(CLASSES))
    # torchvision's init leaves every logit near 0 (all probabilities ~0.25, ranked by rounding noise): spread them
    head = model.classifier[3]
    head.weight.data[...] = np.random.default_rng(1).standard_normal(head.weight.shape) * 2.0
    meta = dict(model="mobilenet_v3_small", num_classes=len(CLASSES), class_names=CLASSES, image_size=64,
                resize_size=72, interpolation="bilinear", mean=[0.485, 0.456, 0.406], std=[0.229, 0.224, 0.225],
                grayscale=False)
    path = str(tmp_path_factory.mktemp("ckpt") / "model.pth")
    ex.save(weights_file(model.state_dict(), meta), path)
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory):
    from PIL import Image

    root = tmp_path_factory.mktemp("images")
    rng = np.random.default_rng(0)
    paths = []
    for i in range(240):
        folder = root / f"shard{i % 3}" / f"part{i % 4}"
        folder.mkdir(parents=True, exist_ok=True)
        h, w = rng.integers(40, 90, 2)
        yy, xx = np.mgrid[0:h, 0:w]
        base = np.stack([(yy * rng.uniform(1, 4)) % 256, (xx * rng.uniform(1, 4)) % 256,
                         rng.uniform(0, 255, (h, w))], axis=2)
        path = folder / f"img{i:03d}.{'png' if i % 2 else 'jpg'}"
        Image.fromarray(base.astype(np.uint8)).save(path)
        paths.append(str(path))
    corrupt = root / "shard1" / "broken.jpg"
    corrupt.write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg" * 10)
    (root / "notes.txt").write_text("not an image, not listed")
    return root, sorted(paths), str(corrupt)


def test_predict_ray_equals_single_process_predict(local_ray, checkpoint, images, tmp_path):
    from excite.app.cli import main
    from excite.app.predict import classify, load_inference_model

    root, paths, corrupt = images
    out = tmp_path / "predictions.parquet"
    code = main(["predict", checkpoint, "--ray", str(root), "--out", str(out), "--topk", "3", "--batch-size", "16",
                 "--concurrency", "2", "--no-progress"])
    assert code == 1, "a corrupt file makes the exit code say so"
    table = pq.read_table(out).to_pylist()
    rows = {r["path"]: r for r in table}
    assert len(table) == len(rows) == len(paths) + 1, "one row per image file, none twice, notes.txt not among them"
    bad = rows.pop(corrupt)
    assert corrupt in bad["error"] and bad["class"] is None and bad["topk_indices"] is None
    assert sorted(rows) == paths
    expected = classify(load_inference_model(checkpoint), paths, topk=3)
    for path, top in zip(paths, expected):
        row = rows[path]
        assert row["error"] is None
        assert row["topk_indices"] == [i for i, _, _ in top]
        assert row["topk_classes"] == [name for _, name, _ in top]
        assert (row["class_index"], row["class"]) == top[0][:2]
        # the same compiled model; only the batch composition differs (16 here, 32 there)
        np.testing.assert_allclose(row["topk_probabilities"], [p for _, _, p in top], rtol=1e-6, atol=1e-9)


def test_predictor_on_read_images_agrees(local_ray, checkpoint, images):
    from excite.app.predict import classify, load_inference_model
    from excite.integrations.ray import ExcitePredictor

    root, paths, _ = images
    some = [p for p in paths if p.endswith(".png")][:8]
    ds = ray.data.read_images(some, include_paths=True, mode="RGB")
    out = ds.map_batches(ExcitePredictor, fn_constructor_kwargs={"model": checkpoint, "topk": 2}, concurrency=1,
                         batch_size=4).to_pandas()
    expected = dict(zip(some, classify(load_inference_model(checkpoint), some, topk=2)))
    assert len(out) == len(some)
    for _, row in out.iterrows():
        top = expected["/" + row["path"].lstrip("/")]  # read_images gives the path without its leading /
        assert list(row["topk_indices"]) == [i for i, _, _ in top]
        np.testing.assert_allclose(list(row["topk_probabilities"]), [p for _, _, p in top], rtol=1e-6, atol=1e-9)


def test_predict_ray_without_out_or_with_images_is_a_usage_error(checkpoint, images, capsys):
    from excite.app.cli import main

    root, paths, _ = images
    assert main(["predict", checkpoint, "--ray", str(root)]) == 1
    assert "--ray needs --out" in capsys.readouterr().err
    assert main(["predict", checkpoint, paths[0], "--ray", str(root), "--out", "x.parquet"]) == 1
    assert "no IMAGE arguments" in capsys.readouterr().err


def test_without_ray_the_error_names_the_extra(monkeypatch, checkpoint, images, tmp_path, capsys):
    import sys

    from excite.app.cli import main

    monkeypatch.setitem(sys.modules, "ray", None)
    assert main(["predict", checkpoint, "--ray", str(images[0]), "--out", str(tmp_path / "p.parquet")]) == 1
    assert 'pip install "excite[ray]"' in capsys.readouterr().err
