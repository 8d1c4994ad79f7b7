"""The PyTorch side of `python -m excite.bench`, in its own process so excite never imports torch.

    python torch_peer.py serve --threads N       # the benchmark's peer (JSON lines on stdin/stdout)
    python torch_peer.py cold|rss --threads N    # fresh-process cases: prints one number

It runs as a script (not ``-m``), so the fresh-process cases measure torch alone, without excite.

In ``serve`` mode it answers the benchmark's requests (set up a case, time a burst of runs; the
protocol is `excite.app.bench.protocol.serve`). The benchmark alternates such bursts of every engine, so all
of them see the same machine conditions.
"""
import argparse
import time


def se_case(torch, shape, backward):
    from torchvision.ops import SqueezeExcitation

    c = shape[1]
    se = SqueezeExcitation(c, max(1, c // 4))
    x = torch.randn(*shape, requires_grad=backward)

    def run():
        if backward:
            out = se(x)
            out.backward(torch.ones_like(out))
        else:
            with torch.no_grad():
                se(x)

    return run


def infer_case(torch, name, batch, size, mode="eager"):
    """torchvision's model in one of the ways a user runs it: eager under no_grad, channels-last under
    inference_mode, or TorchScript traced, frozen and optimised for inference."""
    import torchvision

    model = torchvision.models.get_model(name).eval()
    x = torch.randn(batch, 3, size, size)
    if mode == "channels_last":
        model = model.to(memory_format=torch.channels_last)
        x = x.contiguous(memory_format=torch.channels_last)

        def run():
            with torch.inference_mode():
                model(x)

        return run
    if mode == "torchscript":
        import warnings

        with torch.no_grad(), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # torch 2.14 deprecates freeze in favour of torch.compile
            model = torch.jit.optimize_for_inference(torch.jit.freeze(torch.jit.trace(model, x)))

    def run():
        with torch.no_grad():
            model(x)

    return run


def export_onnx(torch, name, size, path):
    """torchvision's model as ONNX (torch's TorchScript-based exporter, dynamic batch): what the
    onnxruntime and OpenVINO peers run."""
    import warnings

    import torchvision

    model = torchvision.models.get_model(name).eval()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, torch.randn(1, 3, size, size), path, dynamo=False, opset_version=17,
                          input_names=["input"], output_names=["logits"],
                          dynamic_axes={"input": {0: "batch"}, "logits": {0: "batch"}})
    return lambda: None


def train_case(torch, name, batch, size):
    import torchvision

    model = torchvision.models.get_model(name).train()
    opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = torch.randn(batch, 3, size, size)
    y = torch.arange(batch) % 1000

    def run():
        opt.zero_grad()
        torch.nn.functional.cross_entropy(model(x), y).backward()
        opt.step()

    return run


def build(torch, kind, args):
    if kind == "se":
        return se_case(torch, tuple(int(v) for v in args[0].split("x")), bool(int(args[1])))
    if kind == "infer":
        return infer_case(torch, args[0], int(args[1]), int(args[2]), *args[3:])
    if kind == "export_onnx":
        return export_onnx(torch, args[0], int(args[1]), args[2])
    if kind == "train":
        return train_case(torch, args[0], int(args[1]), int(args[2]))
    raise ValueError(f"unknown case kind {kind!r}")


def main():
    p = argparse.ArgumentParser()
    p.add_argument("mode", choices=["serve", "cold", "rss"])
    p.add_argument("--threads", type=int, default=1)
    a = p.parse_args()
    t0 = time.perf_counter()
    import torch

    torch.set_num_threads(a.threads)
    if a.mode == "serve":
        from excite.app.bench.protocol import serve  # the protocol (excite itself never imports torch)

        serve(lambda kind, args: build(torch, kind, args))
        return
    import torchvision

    m = torchvision.models.mobilenet_v3_small().eval()
    with torch.no_grad():
        m(torch.randn(1, 3, 224, 224))
    if a.mode == "cold":
        print(time.perf_counter() - t0)
    else:
        with open("/proc/self/status") as f:
            print(next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024)


if __name__ == "__main__":
    main()
