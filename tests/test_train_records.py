"""A training run you can read and that survives trouble: metrics files and plot, extending a finished run,
stopping on divergence, skipping unreadable images, defaults chosen from the data, failed runs cleaned up.

Budget: about 15 s on two busy cores (tiny digits runs at 16x16, a few steps each).
"""
import contextlib
import io
import json
import math
import os

import numpy as np
import pytest
from PIL import Image

import excite as ex
from excite.app import defaults
from excite.app.cli import main
from excite.app.divergence import DivergenceGuard
from excite.app.metrics import read_metrics_csv
from excite.app.train import TrainConfig, Trainer, TrainingDiverged

TINY = dict(limit=48, batch_size=16, image_size=16, seed=3)


def _quiet(msg):
    pass


def _main(*argv):
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


def test_metrics_csv_and_json_match_the_history_and_the_plot_is_a_png(tmp_path):
    result = Trainer(TrainConfig(epochs=2, **TINY), tmp_path, log=_quiet, progress=False).run()
    rows = read_metrics_csv(tmp_path / "metrics.csv")
    assert [r["epoch"] for r in rows] == [1, 2]
    for row, record in zip(rows, result.history):
        for key in ("train_loss", "train_accuracy", "val_loss", "val_accuracy", "lr"):
            assert row[key] == pytest.approx(record[key], rel=1e-12), key
    assert json.loads((tmp_path / "metrics.json").read_text()) == [
        {k: v for k, v in record.items()} for record in result.history]
    assert result.metrics_csv == str(tmp_path / "metrics.csv")
    pytest.importorskip("matplotlib")
    assert result.plot == str(tmp_path / "curves.png")
    with Image.open(result.plot) as image:
        assert image.format == "PNG" and image.size[0] > 400


def test_plot_is_skipped_without_matplotlib(tmp_path, monkeypatch):
    from excite.app import metrics

    monkeypatch.setattr(metrics, "matplotlib_available", lambda: False)
    result = Trainer(TrainConfig(epochs=1, **TINY), tmp_path, log=_quiet, progress=False).run()
    assert result.plot is None and not (tmp_path / "curves.png").exists() and (tmp_path / "metrics.csv").exists()


def test_resume_extends_a_finished_run_with_more_epochs(tmp_path):
    first = Trainer(TrainConfig(epochs=2, **TINY), tmp_path, log=_quiet, progress=False).run()
    last_lr = first.history[-1]["lr"]
    assert last_lr == pytest.approx(0.0, abs=1e-12)  # the cosine reached zero: a finished schedule
    code, out, err = _main("train", "--resume", str(tmp_path / "last.pth"), "--epochs", "3", "--no-progress")
    assert code == 0, err
    ckpt = ex.load(tmp_path / "last.pth")
    assert ckpt["epoch"] == 3 and ckpt["config"]["epochs"] == 3 and len(ckpt["history"]) == 3
    assert ckpt["history"][:2] == first.history
    assert ckpt["history"][2]["lr"] == pytest.approx(0.0, abs=1e-12)  # the re-planned schedule ends at zero too
    assert len(read_metrics_csv(tmp_path / "metrics.csv")) == 3
    code, _, err = _main("train", "--resume", str(tmp_path / "last.pth"), "--epochs", "2", "--no-progress")
    assert code == 1 and "can extend a run, not shorten it" in err and err.count("\n") == 1


def test_defaults_follow_the_data_size_and_the_optimizer():
    assert defaults.default_batch_size(72) == 8 and defaults.default_batch_size(200) == 16
    assert defaults.default_batch_size(1617) == 64 and defaults.default_batch_size(10) == 8
    config = TrainConfig(epochs=20, optimizer="sgd").resolved()
    choice = defaults.choose(config, 72, finetune=False)
    assert (choice.batch_size, choice.lr) == (8, pytest.approx(0.05 * 8 / 64))  # linear in the batch
    assert choice.warmup_steps == 9 and len(choice.reasons) == 3
    # the digits network has a recipe of its own; other models take the general rate
    general = defaults.choose(TrainConfig(epochs=20, optimizer="sgd", model="efficientnet_b0").resolved(), 72, False)
    assert general.lr == pytest.approx(0.025 * 8 / 64)
    tuned = defaults.choose(TrainConfig(epochs=20).resolved(), 72, finetune=True)
    assert tuned.lr == pytest.approx(1e-3 * math.sqrt(8 / 64)) and tuned.warmup_steps == 9
    given = defaults.choose(TrainConfig(epochs=2, batch_size=16, lr=0.1, warmup_steps=0).resolved(), 72, False)
    assert (given.batch_size, given.lr, given.warmup_steps, given.reasons) == (16, 0.1, 0, [])


def test_the_log_shows_the_chosen_values(tmp_path):
    text = "\n".join(Trainer(TrainConfig(epochs=1, limit=48, image_size=16), tmp_path, log=_quiet,
                             progress=False).describe())
    assert "batch 8 (6 steps an epoch)" in text and "chosen: batch size 8 (48 training images" in text
    assert "lr 0.00354 (adamw, scaled by the square root to batch 8)" in text


# ===== divergence ==================================================================================
def test_divergence_guard_spots_nan_and_explosions_but_not_noise():
    guard = DivergenceGuard(num_classes=3)
    assert all(guard.check(v) is None for v in (1.1, 1.3, 0.9, 1.6, 1.0, 0.7, 1.2))
    assert "nan" in DivergenceGuard(3).check(float("nan"))
    assert "inf" in DivergenceGuard(3).check(float("inf"))
    exploding = DivergenceGuard(num_classes=3)
    reasons = [exploding.check(v) for v in (1.1, 1.0, 2.0, 5.0, 9.0, 15.0, 20.0)]
    assert reasons[:3] == [None] * 3 and any(r and "exploded" in r for r in reasons)
    restored = DivergenceGuard(3, exploding.state())
    assert restored.state() == exploding.state()


def test_a_diverging_run_stops_with_a_clear_message_and_keeps_the_last_good_checkpoint(tmp_path, monkeypatch):
    original = DivergenceGuard.check
    seen = []

    def check(self, loss):
        seen.append(loss)
        return "the loss became nan" if len(seen) == 5 else original(self, loss)  # epoch 2, batch 2

    monkeypatch.setattr(DivergenceGuard, "check", check)
    trainer = Trainer(TrainConfig(epochs=3, **TINY), tmp_path, log=_quiet, progress=False)
    with pytest.raises(TrainingDiverged) as info:
        trainer.run()
    message = str(info.value)
    assert "diverged at epoch 2, batch 2: the loss became nan" in message
    assert "Kept best.pth (epoch 1) and last.pth (end of epoch 1)" in message and "lower --lr" in message
    ckpt = ex.load(tmp_path / "last.pth")
    assert (ckpt["epoch"], ckpt["step"]) == (1, 0) and len(read_metrics_csv(tmp_path / "metrics.csv")) == 1


def test_a_run_that_diverges_at_once_leaves_no_empty_folder_and_one_error_line(tmp_path):
    out = tmp_path / "run"
    code, _, err = _main("train", "--out", str(out), "--epochs", "2", "--limit", "48", "--image-size", "16",
                         "--optimizer", "sgd", "--lr", "1e6", "--no-progress")
    assert code == 1 and err.count("\n") == 1, err
    assert err.startswith("excite: error: training diverged at epoch 1") and "Nothing was saved" in err
    assert not out.exists()


# ===== bad data ====================================================================================
def _folder_with_a_corrupt_image(root):
    rng = np.random.default_rng(0)
    for cls, value in (("dark", 40), ("light", 215)):
        folder = root / cls
        folder.mkdir(parents=True)
        for i in range(10):
            pixels = np.clip(value + rng.normal(0, 20, (12, 12, 3)), 0, 255).astype(np.uint8)
            Image.fromarray(pixels).save(folder / f"{i}.png")
    (root / "dark" / "broken.png").write_bytes(b"\x89PNG\r\n\x1a\n not really")
    return root / "dark" / "broken.png"


def test_an_unreadable_image_is_skipped_with_a_warning_naming_it(tmp_path, capsys):
    broken = _folder_with_a_corrupt_image(tmp_path / "data")
    lines = []
    config = TrainConfig(data=str(tmp_path / "data"), epochs=2, image_size=16, batch_size=4, val_fraction=0.2,
                         workers=2)
    result = Trainer(config, tmp_path / "run", log=lines.append, progress=False).run()
    assert len(result.history) == 2
    warnings = capsys.readouterr().err
    assert warnings.count(f"warning: skipping unreadable image {broken}") == 1  # once, not every epoch
    assert any(line.startswith("skipped 1 unreadable image(s): ") and str(broken) in line for line in lines)


def test_strict_data_stops_at_the_unreadable_image_and_leaves_no_empty_folder(tmp_path):
    broken = _folder_with_a_corrupt_image(tmp_path / "data")
    out = tmp_path / "run"
    code, _, err = _main("train", "--data", str(tmp_path / "data"), "--strict-data", "--epochs", "1",
                         "--image-size", "16", "--batch-size", "4", "--workers", "0", "--out", str(out),
                         "--no-progress")
    assert code == 1 and err.count("\n") == 1 and f"cannot read image {broken}" in err, err
    assert not out.exists()


def test_a_failed_run_keeps_a_folder_it_did_not_create(tmp_path):
    from excite.app.run_dir import remove_if_failed

    (tmp_path / "mine.txt").write_text("user data")
    assert remove_if_failed(str(tmp_path), created=True) is False and (tmp_path / "mine.txt").exists()
    empty = tmp_path / "empty"
    empty.mkdir()
    (empty / "metrics.csv").write_text("epoch\n")
    assert remove_if_failed(str(empty), created=False) is False and empty.exists()
    assert remove_if_failed(str(empty), created=True) is True and not empty.exists()
    assert os.path.exists(tmp_path)
