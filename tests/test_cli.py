"""The `excite` command: predict on torch checkpoints, info MACs vs torchvision, convert, export, --help, bad input.

Budget: about 30 s on two busy cores (five subprocesses; the rest calls `excite.app.cli.main` in-process).
"""
import contextlib
import io
import json
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

import excite as ex
from excite.app.cli import main

VERBS = ("train", "predict", "info", "convert", "export", "warmup", "bench")


def _cli(*args, timeout=120):
    return subprocess.run([sys.executable, "-m", "excite", *args], capture_output=True, text=True, timeout=timeout)


def _main(*argv):
    """(exit code, stdout, stderr) of the command run in-process."""
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        try:
            code = main(list(argv))
        except SystemExit as e:
            code = e.code
    return code, out.getvalue(), err.getvalue()


def _assert_one_line_error(code, err, *fragments, expected_code=1):
    assert code == expected_code, err
    assert err.startswith("excite: error: ") and err.count("\n") == 1, err
    assert "Traceback" not in err
    for fragment in fragments:
        assert fragment in err, err


@pytest.fixture(scope="module")
def torch_checkpoint(tmp_path_factory, torch, torchvision):
    """mobilenet_v3_small with 3 classes, trained a few steps in torch at 64x64 and saved with torch.save."""
    root = tmp_path_factory.mktemp("torchckpt")
    torch.manual_seed(0)
    net = torchvision.models.mobilenet_v3_small(num_classes=3)
    opt = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    x, y = torch.randn(8, 3, 64, 64), torch.tensor([0, 1, 2, 0, 1, 2, 0, 1])
    for _ in range(3):
        opt.zero_grad()
        torch.nn.functional.cross_entropy(net(x), y).backward()
        opt.step()
    net.eval()
    path = root / "small3.pth"
    torch.save(net.state_dict(), path)
    rng = np.random.default_rng(1)
    images = []
    for i, size in enumerate([(64, 64), (80, 96)]):
        img_path = root / f"img{i}.png"
        Image.fromarray(rng.integers(0, 256, (*size, 3), dtype=np.uint8)).save(img_path)
        images.append(str(img_path))
    return net, path, images


def _torch_probabilities(torch, torchvision, net, images, size):
    from torchvision import transforms as T

    tf = T.Compose([T.Resize(size), T.CenterCrop(size), T.ToTensor(),
                    T.Normalize((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
    batch = torch.stack([tf(Image.open(p).convert("RGB")) for p in images])
    with torch.no_grad():
        return torch.softmax(net(batch), dim=1).numpy()


@pytest.mark.parametrize("engine", ["excite", "onnxruntime"])
def test_predict_on_a_torch_checkpoint_matches_torch_softmax(torch, torchvision, torch_checkpoint, engine):
    net, path, images = torch_checkpoint
    proc = _cli("predict", str(path), *images, "--model", "mobilenet_v3_small", "--image-size", "64",
                "--resize-size", "64", "--topk", "3", "--engine", engine, "--json")
    assert proc.returncode == 0, proc.stderr
    got = json.loads(proc.stdout)
    expected = _torch_probabilities(torch, torchvision, net, images, 64)
    for row, probs in zip(got, expected):
        order = np.argsort(-probs)
        assert [t["index"] for t in row["top"]] == order.tolist()
        assert [t["class"] for t in row["top"]] == [str(i) for i in order]
        np.testing.assert_allclose([t["probability"] for t in row["top"]], probs[order], rtol=1e-4, atol=2e-5)


def test_predict_table_output_and_best_pth_with_run_json(tmp_path):
    """best.pth of `excite train` is a bare state_dict; predict finds its architecture in run.json."""
    from excite.app.train import TrainConfig, Trainer

    Trainer(TrainConfig(epochs=1, limit=16, batch_size=16, image_size=16), tmp_path, log=lambda m: None,
            progress=False).run()
    digit = tmp_path / "digit.png"
    Image.fromarray(np.eye(8, dtype=np.uint8) * 255).save(digit)
    code, out, err = _main("predict", str(tmp_path / "best.pth"), str(digit), "--topk", "2")
    assert code == 0, err
    lines = out.splitlines()
    assert lines[0] == str(digit) and len(lines) == 3 and lines[1].strip().startswith("1. ")
    code, out_last, err = _main("predict", str(tmp_path / "last.pth"), str(digit), "--json")
    assert code == 0, err
    probs = [t["probability"] for t in json.loads(out_last)[0]["top"]]
    assert len(probs) == 5 and probs == sorted(probs, reverse=True) and sum(probs) <= 1 + 1e-9

    # a training state holds more than tensors: convert keeps its model weights for safetensors
    from safetensors.numpy import load_file

    code, out, err = _main("convert", str(tmp_path / "last.pth"), str(tmp_path / "w.safetensors"))
    assert code == 0 and "the weights of mobilenet_v3_digits" in out, err
    weights, model_state = load_file(tmp_path / "w.safetensors"), ex.load(tmp_path / "last.pth")["model"]
    assert sorted(weights) == sorted(model_state)
    assert all(np.array_equal(weights[k], model_state[k].numpy()) for k in model_state)


def test_predict_bad_inputs_are_one_line_errors(tmp_path, torch, torch_checkpoint):
    net, path, images = torch_checkpoint
    torch.save(net, tmp_path / "whole_model.pth")  # pickles the class: never loaded
    text = tmp_path / "notes.png"
    text.write_text("not an image")
    truncated = tmp_path / "cut.png"
    truncated.write_bytes(open(images[0], "rb").read()[:100])
    garbage = tmp_path / "garbage.pth"
    garbage.write_bytes(b"\x00" * 64)
    cases = [
        (("predict", str(tmp_path / "missing.pth"), images[0]), ["no such file", "missing.pth"]),
        (("predict", str(path), str(tmp_path / "missing.jpg"), "--model", "mobilenet_v3_small"), ["no such file"]),
        (("predict", str(path), str(text), "--model", "mobilenet_v3_small"), ["notes.png is not an image"]),
        (("predict", str(path), str(truncated), "--model", "mobilenet_v3_small"), ["cut.png"]),
        (("predict", str(path), images[0]), ["holds only weights", "--model"]),
        (("predict", "mobilenet_v3_smal", images[0]), ["Unknown model", "did you mean 'mobilenet_v3_small'"]),
        (("predict", "mobilenet_v3_small", images[0]), ["--weights"]),
        (("predict", "mobilenet_v3_small", images[0], "--weights", "IMAGENET9K"), ["unknown weights"]),
        (("predict", str(garbage), images[0], "--model", "mobilenet_v3_small"), ["garbage.pth"]),
        (("predict", str(tmp_path / "whole_model.pth"), images[0], "--model", "mobilenet_v3_small"),
         ["refused", "torch.save(model.state_dict(), path)"]),
        # a checkpoint of another architecture: say which keys differ
        (("predict", str(path), images[0], "--model", "mobilenet_v3_large"),
         ["does not fit mobilenet_v3_large", "106 missing keys", "56 unexpected keys (features.1.block.1.fc1.weight"]),
        (("predict", str(path), images[0], "--model", "efficientnet_b0"),
         ["does not fit efficientnet_b0", "shape mismatches"]),
    ]
    for argv, fragments in cases:
        code, _, err = _main(*argv)
        _assert_one_line_error(code, err, *fragments)
    for argv in (("predict", str(path), images[0], "--topk", "0"), ("predict", str(path), images[0], "--engine", "tf"),
                 ("predict", str(path)), ("info", "mobilenet_v3_small", "--image-size", "x")):
        code, _, err = _main(*argv)
        _assert_one_line_error(code, err, "argument" if len(argv) > 2 else "required", expected_code=2)


def test_bad_input_in_a_subprocess_prints_one_line_and_no_traceback(tmp_path):
    proc = _cli("predict", "efficientnet_b9", str(tmp_path / "x.jpg"))
    _assert_one_line_error(proc.returncode, proc.stderr, "no such file")
    proc = _cli("info", "efficientnet_b9")
    _assert_one_line_error(proc.returncode, proc.stderr, "Unknown model 'efficientnet_b9'", "did you mean")
    assert proc.stdout == ""


@pytest.mark.parametrize("name", ["mobilenet_v3_large", "efficientnet_b0", "regnet_y_400mf", "regnet_y_1_6gf"])
def test_info_macs_and_params_match_torchvision_metadata(torchvision, name):
    """torchvision's weights meta '_ops' (GFLOPS there are MACs, rounded to 3 decimals) and 'num_params'."""
    from excite.vision.models import get_model as build_model
    from excite.app.summary import summarize

    meta = torchvision.models.get_model_weights(name).DEFAULT.meta
    summary = summarize(build_model(name), image_size=224)
    assert summary.total_params == meta["num_params"]
    assert round(summary.total_macs / 1e9, 3) == meta["_ops"]


def test_info_table_rows_match_torch_module_shapes(torch, torchvision):
    """Every module's output shape and MACs, in torch with forward hooks, against `excite info --json`."""
    code, out, err = _main("info", "mobilenet_v3_small", "--image-size", "96", "--json")
    assert code == 0, err
    got = json.loads(out)
    net = torchvision.models.mobilenet_v3_small().eval()
    shapes, macs = {}, {}
    for name, module in net.named_modules():
        def hook(mod, args, output, name=name):
            shapes[name] = list(output.shape)
            if isinstance(mod, torch.nn.Conv2d):
                macs[name] = output.numel() * mod.in_channels // mod.groups * mod.kernel_size[0] * mod.kernel_size[1]
            elif isinstance(mod, torch.nn.Linear):
                macs[name] = output.numel() * mod.in_features
        module.register_forward_hook(hook)
    with torch.no_grad():
        net(torch.zeros(1, 3, 96, 96))
    rows = {r["name"]: r for r in got["layers"]}
    assert list(rows) == [n for n, _ in net.named_modules()]
    for name, module in net.named_modules():
        assert rows[name]["output_shape"] == shapes[name], name
        assert rows[name]["params"] == sum(p.numel() for p in module.parameters()), name
        assert rows[name]["macs"] == sum(v for k, v in macs.items() if k == name or k.startswith(name + ".")
                                         or name == ""), name
    assert got["total_macs"] == sum(macs.values())
    code, table, _ = _main("info", "mobilenet_v3_small", "--depth", "1")
    assert code == 0 and "features (Sequential)" in table and "Total MACs: 56,510,400" in table


def test_convert_round_trip_with_torch_and_safetensors(tmp_path, torch, torchvision):
    from safetensors.torch import load_file

    net = torchvision.models.mobilenet_v3_small(num_classes=4)
    torch.save(net.state_dict(), tmp_path / "a.pth")
    code, out, err = _main("convert", str(tmp_path / "a.pth"), str(tmp_path / "a.safetensors"))
    assert code == 0, err
    loaded = load_file(tmp_path / "a.safetensors")
    for k, v in net.state_dict().items():
        assert torch.equal(loaded[k], v), k
    code, _, err = _main("convert", str(tmp_path / "a.safetensors"), str(tmp_path / "b.pth"))
    assert code == 0, err
    back = torch.load(tmp_path / "b.pth", weights_only=True)
    assert all(torch.equal(back[k], v) for k, v in net.state_dict().items())
    code, _, err = _main("convert", str(tmp_path / "nope.pth"), str(tmp_path / "c.safetensors"))
    _assert_one_line_error(code, err, "no such file")


def test_export_writes_an_onnx_graph_with_the_model_outputs(tmp_path):
    import onnxruntime as ort

    from excite.vision.models import get_model as build_model

    ex.manual_seed(0)
    model = build_model("mobilenet_v3_digits", num_classes=10).eval()
    ex.save(model.state_dict(), tmp_path / "w.pth")
    code, out, err = _main("export", str(tmp_path / "w.pth"), str(tmp_path / "m.onnx"), "--model",
                           "mobilenet_v3_digits")
    assert code == 0, err
    x = np.random.default_rng(0).standard_normal((2, 3, 32, 32)).astype(np.float32)
    session = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    got = session.run(None, {session.get_inputs()[0].name: x})[0]
    with ex.no_grad():
        expected = model(ex.tensor(x)).numpy()
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


def test_help_on_every_verb():
    for verb in VERBS:
        code, out, err = _main(verb, "--help")
        assert code == 0 and out.startswith(f"usage: excite {verb}"), (verb, out, err)
    proc = _cli("--help")
    assert proc.returncode == 0 and all(verb in proc.stdout for verb in VERBS)
    code, out, _ = _main()
    assert code == 2 and "COMMAND" in out
    code, _, err = _main("fly")
    _assert_one_line_error(code, err, "invalid choice", expected_code=2)


def test_info_without_a_model_lists_every_registered_name():
    code, out, _ = _main("info")
    names = out.split()
    assert code == 0 and names == sorted(names) and "mobilenet_v3_digits" in names
    assert {"mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "efficientnet_b7",
            "efficientnet_v2_l"} <= set(names)


def test_predict_with_pretrained_weights_uses_their_preprocessing_and_categories(tmp_path, monkeypatch, torch,
                                                                                  torchvision):
    """`excite predict NAME --weights DEFAULT`: the registry's file is replaced by a torch-made state_dict (no
    download here); resize 256 / crop 224 and the ImageNet categories must come from the weights entry."""
    from excite.vision import weights as registry

    torch.manual_seed(0)
    net = torchvision.models.mobilenet_v3_small().eval()
    with torch.no_grad():  # a fresh init gives logits of ~1e-10: all classes tie
        for p in net.parameters():
            p.add_(torch.randn_like(p) * 0.1)
    torch.save(net.state_dict(), tmp_path / "w.pth")
    monkeypatch.setattr(registry.WeightsEnum, "get_state_dict",
                        lambda self, progress=True, check_hash=True: ex.load(tmp_path / "w.pth"))
    image = tmp_path / "photo.png"
    Image.fromarray(np.random.default_rng(2).integers(0, 256, (240, 300, 3), dtype=np.uint8)).save(image)
    code, out, err = _main("predict", "mobilenet_v3_small", str(image), "--weights", "DEFAULT", "--json", "--topk", "3")
    assert code == 0, err
    top = json.loads(out)[0]["top"]
    tv_weights = torchvision.models.MobileNet_V3_Small_Weights.DEFAULT
    with torch.no_grad():
        probs = torch.softmax(net(tv_weights.transforms()(Image.open(image).convert("RGB"))[None]), 1)[0].numpy()
    order = np.argsort(-probs)[:3]
    assert [t["index"] for t in top] == order.tolist()
    assert [t["class"] for t in top] == [tv_weights.meta["categories"][i] for i in order]
    np.testing.assert_allclose([t["probability"] for t in top], probs[order], rtol=1e-3, atol=1e-5)
