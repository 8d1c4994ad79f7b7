"""The training loop: checkpoints torch can load, exact resume (in-process and after a real Ctrl-C), the CLI run.

Budget: about 25 s on two busy cores (tiny runs: 48 digits at 16x16, three steps an epoch).
"""
import os
import signal
import subprocess
import sys
from functools import partial

import numpy as np
import pytest

import excite as ex
from excite.vision.models.mobilenetv3 import MOBILENET_V3_DIGITS_BN, MOBILENET_V3_DIGITS_LAST_CHANNEL, MOBILENET_V3_DIGITS_SETTING
from excite.app.train import TrainConfig, Trainer, TrainingInterrupted

TINY = dict(epochs=3, limit=48, batch_size=16, image_size=16, seed=3)
TINY_ARGS = ["--limit", "48", "--batch-size", "16", "--image-size", "16", "--seed", "3", "--no-progress"]


def _quiet(msg):
    pass


def _excite_cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "excite", *args], capture_output=True, text=True, timeout=timeout)


def _torch_digits_net(torch, torchvision, num_classes=10):
    """The torch-side twin of mobilenet_v3_digits: torchvision's MobileNetV3 built from the same table."""
    from torchvision.models.mobilenetv3 import InvertedResidualConfig, MobileNetV3

    setting = [InvertedResidualConfig(*row, width_mult=1.0) for row in MOBILENET_V3_DIGITS_SETTING]
    return MobileNetV3(setting, MOBILENET_V3_DIGITS_LAST_CHANNEL, num_classes=num_classes,
                       norm_layer=partial(torch.nn.BatchNorm2d, **MOBILENET_V3_DIGITS_BN))


def _arrays(state):
    return {k: np.asarray(v.numpy() if hasattr(v, "numpy") else v) for k, v in state.items()}


def _assert_same_state(a, b, what):
    assert list(a) == list(b), f"{what}: keys differ"
    for k in a:
        assert np.array_equal(np.asarray(a[k]), np.asarray(b[k])), f"{what}: {k} differs"


def _optimizer_arrays(opt_state):
    return {f"{i}.{name}": np.asarray(v.numpy()) for i, s in opt_state["state"].items() for name, v in s.items()}


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    """A tiny 3-epoch run that never stops: the reference for every resume test."""
    out = tmp_path_factory.mktemp("straight")
    ex.manual_seed(123)  # the run must not depend on the global generator's state
    result = Trainer(TrainConfig(**TINY), out, log=_quiet, progress=False).run()
    return out, result


def _interrupted_then_resumed(tmp_path, stop_at):
    out = tmp_path / "resumed"
    with pytest.raises(TrainingInterrupted) as info:
        Trainer(TrainConfig(**TINY), out, log=_quiet, progress=False).run(_stop_at=stop_at)
    assert info.value.epoch == stop_at[0]
    ckpt = ex.load(out / "last.pth")
    assert (ckpt["epoch"], ckpt["step"]) == tuple(stop_at)
    ex.manual_seed(999)  # a different global generator state must not matter either
    Trainer.resume(out / "last.pth", log=_quiet, progress=False).run()
    return out


@pytest.mark.parametrize("stop_at", [(2, 0), (1, 1)], ids=["2+1 epochs", "mid-epoch"])
def test_resume_gives_the_same_weights_as_an_uninterrupted_run(uninterrupted, tmp_path, stop_at):
    straight, result = uninterrupted
    resumed = _interrupted_then_resumed(tmp_path, stop_at)
    a, b = ex.load(straight / "last.pth"), ex.load(resumed / "last.pth")
    _assert_same_state(_arrays(a["model"]), _arrays(b["model"]), "model")
    _assert_same_state(_optimizer_arrays(a["optimizer"]), _optimizer_arrays(b["optimizer"]), "optimizer state")
    assert a["lr_scheduler"]["last_epoch"] == b["lr_scheduler"]["last_epoch"] == 9
    assert [h["train_loss"] for h in a["history"]] == [h["train_loss"] for h in b["history"]]
    assert [h["val_accuracy"] for h in a["history"]] == [h["val_accuracy"] for h in b["history"]]
    _assert_same_state(_arrays(ex.load(straight / "best.pth")), _arrays(ex.load(resumed / "best.pth")), "best.pth")


def test_checkpoints_load_in_torch_and_match_its_model(uninterrupted, torch, torchvision):
    out, _ = uninterrupted
    best = torch.load(out / "best.pth", weights_only=True)
    last = torch.load(out / "last.pth", weights_only=True)
    net = _torch_digits_net(torch, torchvision)
    net.load_state_dict(best)  # strict: same keys and shapes as torchvision's MobileNetV3
    assert list(last["model"]) == list(net.state_dict())
    assert last["meta"]["model"] == "mobilenet_v3_digits" and last["meta"]["class_names"] == [str(d) for d in range(10)]
    # the optimizer and schedule states are torch's own formats
    opt = torch.optim.AdamW(net.parameters(), lr=0.01, weight_decay=0.05)
    opt.load_state_dict(last["optimizer"])
    # 3 epochs of 3 steps: one warm-up step (a fifth of the run at most), then 8 of cosine decay
    ramp = torch.optim.lr_scheduler.LinearLR(opt, start_factor=0.04, total_iters=1)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(opt, T_max=8)
    sched = torch.optim.lr_scheduler.SequentialLR(opt, [ramp, cosine], milestones=[1])
    torch_lrs = []
    for _ in range(9):
        opt.step()
        sched.step()
        torch_lrs.append(sched.get_last_lr()[0])
    # the lr recorded at the end of each epoch is torch's after 3, 6 and 9 steps
    np.testing.assert_allclose([h["lr"] for h in last["history"]], torch_lrs[2::3], rtol=1e-12, atol=1e-15)
    assert torch_lrs[2] > torch_lrs[5] > 0
    sched.load_state_dict(last["lr_scheduler"])
    assert sched.last_epoch == 9

    # same weights, same outputs
    x = np.random.default_rng(0).standard_normal((4, 3, 16, 16)).astype(np.float32)
    model = ex.vision.models.get_model("mobilenet_v3_digits", num_classes=10)
    model.load_state_dict(ex.load(out / "best.pth"))
    model.eval()
    net.eval()
    with ex.no_grad(), torch.no_grad():
        ours, theirs = model(ex.tensor(x)).numpy(), net(torch.tensor(x)).numpy()
    np.testing.assert_allclose(ours, theirs, rtol=1e-4, atol=1e-4)


def test_fresh_trainer_is_reproducible_and_reports_accuracy(uninterrupted):
    _, result = uninterrupted
    assert 0.0 <= result.test_accuracy <= 1.0 and result.test_size == 48 and result.test_split == "test"
    assert len(result.history) == 3 and result.best_epoch in (1, 2, 3)
    assert result.best_val_accuracy == max(h["val_accuracy"] for h in result.history)


def test_cli_train_one_epoch_writes_checkpoints_torch_loads(tmp_path, torch, torchvision):
    out = tmp_path / "run"
    proc = _excite_cli("train", "--epochs", "1", *TINY_ARGS, "--out", str(out))
    assert proc.returncode == 0, proc.stderr
    assert "best.pth" in proc.stdout and "test accuracy:" in proc.stdout
    assert "epoch   1/1" in proc.stdout
    net = _torch_digits_net(torch, torchvision)
    net.load_state_dict(torch.load(out / "best.pth", weights_only=True))
    last = torch.load(out / "last.pth", weights_only=True)
    assert last["epoch"] == 1 and last["step"] == 0 and last["config"]["epochs"] == 1
    expected = ["best.pth", "last.pth", "metrics.csv", "metrics.json", "run.json"]
    if "no plot" not in proc.stdout:
        expected.insert(1, "curves.png")
    assert sorted(os.listdir(out)) == expected  # no temporary files left
    assert "metrics: " in proc.stdout and "metrics.csv" in proc.stdout

    # a second run into the same --out refuses to overwrite it; --resume with other settings is refused too
    again = _excite_cli("train", "--epochs", "1", *TINY_ARGS, "--out", str(out))
    assert again.returncode == 1 and again.stderr.count("\n") == 1 and "--resume" in again.stderr
    changed = _excite_cli("train", "--resume", "--lr", "0.5", "--out", str(out))
    assert changed.returncode == 1 and changed.stderr.count("\n") == 1
    assert "started with --lr" in changed.stderr and "Traceback" not in changed.stderr


def test_ctrl_c_saves_last_pth_exits_130_and_resume_finishes_the_same_run(tmp_path, uninterrupted):
    """A real SIGINT while training: last.pth is complete, the exit code 130, and --resume ends exactly
    where the uninterrupted run did."""
    straight, _ = uninterrupted
    out = tmp_path / "run"
    args = ["train", "--epochs", "3", *TINY_ARGS, "--out", str(out)]
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    proc = subprocess.Popen([sys.executable, "-m", "excite", *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env=env)
    try:
        for line in proc.stdout:
            if line.startswith("training "):  # Ctrl-C is handled from this line on
                proc.send_signal(signal.SIGINT)
                break
        stdout, stderr = proc.communicate(timeout=120)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 130, stderr
    assert "interrupted" in stderr and "--resume" in stderr and "Traceback" not in stderr
    files = os.listdir(out)
    assert "last.pth" in files and not [f for f in files if f.endswith(".tmp") or f.startswith(".")], files
    ckpt = ex.load(out / "last.pth")
    assert (ckpt["epoch"], ckpt["step"]) != (3, 0)  # it really stopped early

    resumed = _excite_cli("train", "--resume", str(out / "last.pth"), "--no-progress")
    assert resumed.returncode == 0, resumed.stderr
    _assert_same_state(_arrays(ex.load(straight / "last.pth")["model"]), _arrays(ex.load(out / "last.pth")["model"]),
                       "model after Ctrl-C and --resume")


def test_bad_training_options_are_one_line_errors(tmp_path):
    from excite.app.cli import main

    one_class = tmp_path / "one" / "cats"
    one_class.mkdir(parents=True)
    from PIL import Image

    Image.new("RGB", (8, 8)).save(one_class / "a.png")
    cases = [
        (["train", "--data", str(tmp_path / "missing")], "not a directory"),
        (["train", "--data", str(tmp_path / "one"), "--out", str(tmp_path / "o1")], "at least 2"),
        (["train", "--model", "mobilenetv3_digits", "--out", str(tmp_path / "o2")], "did you mean 'mobilenet_v3_digits'"),
        (["train", "--resume", "--out", str(tmp_path / "nothing")], "nothing to resume"),
        (["train", "--resume", str(tmp_path / "nope.pth")], "no such file"),
    ]
    for argv, expected in cases:
        code, err = _run_main(main, argv)
        assert code == 1 and expected in err and err.count("\n") == 1, (argv, err)
    for argv in (["train", "--epochs", "0"], ["train", "--lr", "-1"], ["train", "--optimizer", "adagrad"],
                 ["train", "--batch-size", "many"]):
        code, err = _run_main(main, argv)
        assert code == 2 and err.startswith("excite: error: argument") and err.count("\n") == 1, (argv, err)


def _run_main(main, argv):
    import contextlib
    import io

    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(io.StringIO()):
        try:
            code = main(argv)
        except SystemExit as e:
            code = e.code
    return code, err.getvalue()


def test_image_folder_training_with_augmentation_and_workers_resumes_exactly(tmp_path):
    """--data with train/ and val/: classes from the folders, random crops and flips drawn in two worker
    threads, and still a resumed run ends with the uninterrupted run's weights."""
    from PIL import Image

    rng = np.random.default_rng(0)
    for split, count in (("train", 12), ("val", 4)):
        for cls, value in (("dark", 40), ("light", 215)):
            folder = tmp_path / "imgs" / split / cls
            folder.mkdir(parents=True)
            for i in range(count):
                pixels = np.clip(value + rng.normal(0, 20, (12, 12, 3)), 0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{i}.png")
    config = TrainConfig(data=str(tmp_path / "imgs"), epochs=2, batch_size=8, image_size=16, workers=2)
    result = Trainer(config, tmp_path / "straight", log=_quiet, progress=False).run()
    assert result.test_split == "val" and result.test_size == 8
    meta = ex.load(tmp_path / "straight" / "last.pth")["meta"]
    assert meta["class_names"] == ["dark", "light"] and meta["num_classes"] == 2 and meta["image_size"] == 16

    with pytest.raises(TrainingInterrupted):
        Trainer(config, tmp_path / "resumed", log=_quiet, progress=False).run(_stop_at=(1, 1))
    Trainer.resume(tmp_path / "resumed" / "last.pth", log=_quiet, progress=False, workers=0).run()
    _assert_same_state(_arrays(ex.load(tmp_path / "straight" / "last.pth")["model"]),
                       _arrays(ex.load(tmp_path / "resumed" / "last.pth")["model"]), "model")


def test_ctrl_c_during_the_final_test_evaluation_leaves_a_complete_run(tmp_path, monkeypatch):
    original = Trainer.evaluate

    def evaluate(self, dataset, stop=None, desc="val"):
        if desc == "test":
            os.kill(os.getpid(), signal.SIGINT)  # handled by the trainer: a request, not an exception
        return original(self, dataset, stop=stop, desc=desc)

    monkeypatch.setattr(Trainer, "evaluate", evaluate)
    config = TrainConfig(**dict(TINY, epochs=1))
    with pytest.raises(TrainingInterrupted) as info:
        Trainer(config, tmp_path, log=_quiet, progress=False).run()
    assert "end of epoch 1" in str(info.value)
    ckpt = ex.load(tmp_path / "last.pth")
    assert (ckpt["epoch"], ckpt["step"]) == (1, 0) and (tmp_path / "best.pth").exists()
    monkeypatch.undo()
    result = Trainer.resume(tmp_path / "last.pth", log=_quiet, progress=False).run()
    assert result.test_size == 48 and len(result.history) == 1
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # the trainer put Python's back


def test_a_second_ctrl_c_aborts_at_once():
    from excite.app.train import _StopRequest

    stop = _StopRequest()
    with stop.installed():
        stop._handle(signal.SIGINT, None)
        assert stop.requested
        with pytest.raises(KeyboardInterrupt):
            stop._handle(signal.SIGINT, None)


def test_default_run_directories_never_overwrite_and_resume_picks_the_latest(tmp_path):
    from excite.app.train import fresh_run_dir, latest_run

    out = str(tmp_path / "runs" / "excite")
    assert fresh_run_dir(out) == out and latest_run(out) is None
    for name, mtime in (("excite", 100), ("excite2", 300), ("excite3", 200)):
        (tmp_path / "runs" / name).mkdir(parents=True)
        (tmp_path / "runs" / name / "last.pth").write_bytes(b"")
        os.utime(tmp_path / "runs" / name / "last.pth", (mtime, mtime))
        os.utime(tmp_path / "runs" / name, (mtime, mtime))
    (tmp_path / "runs" / "excite_other").mkdir()
    assert fresh_run_dir(out) == out + "4"
    assert latest_run(out) == out + "2"
    # a newer run that stopped before its first checkpoint is named, not silently passed over for an older one
    (tmp_path / "runs" / "excite4").mkdir()
    (tmp_path / "runs" / "excite4" / "metrics.csv").write_text("epoch\n")
    with pytest.raises(ex.InvalidArgumentError, match="excite4, has no last.pth"):
        latest_run(out)
