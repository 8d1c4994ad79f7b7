"""The PyTorch side of `python -m excite.bench`, run in its own process so excite never imports torch.

    python benchmarks/torch_peer.py KIND ARGS... --threads N --reps N --warmup N

Prints one number: the median seconds of the case (or MB for `rss`).
"""
import argparse
import statistics
import time


def median_time(fn, reps, warmup):
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return statistics.median(times)


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


def infer_case(torch, name, batch, size):
    import torchvision

    model = torchvision.models.get_model(name).eval()
    x = torch.randn(batch, 3, size, size)

    def run():
        with torch.no_grad():
            model(x)

    return run


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


def main():
    p = argparse.ArgumentParser()
    p.add_argument("kind", choices=["se", "infer", "train", "cold", "rss"])
    p.add_argument("args", nargs="*")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--reps", type=int, default=5)
    p.add_argument("--warmup", type=int, default=2)
    a = p.parse_args()
    t0 = time.perf_counter()
    import torch

    torch.set_num_threads(a.threads)
    if a.kind in ("cold", "rss"):
        import torchvision

        m = torchvision.models.mobilenet_v3_small().eval()
        with torch.no_grad():
            m(torch.randn(1, 3, 224, 224))
        if a.kind == "cold":
            print(time.perf_counter() - t0)
        else:
            with open("/proc/self/status") as f:
                print(next(int(line.split()[1]) for line in f if line.startswith("VmHWM")) / 1024)
        return
    if a.kind == "se":
        fn = se_case(torch, tuple(int(v) for v in a.args[0].split("x")), a.args[1] == "1")
    elif a.kind == "infer":
        fn = infer_case(torch, a.args[0], int(a.args[1]), int(a.args[2]))
    else:
        fn = train_case(torch, a.args[0], int(a.args[1]), int(a.args[2]))
    print(median_time(fn, a.reps, a.warmup))


if __name__ == "__main__":
    main()
