"""The benchmark's distributed case: data-parallel training throughput (images/s) of MobileNetV3-Small on 1 and
2 MPI ranks at a fixed batch per rank, and the scaling efficiency (2-rank throughput over twice the 1-rank one).

Each run is `mpiexec -n R python -m excite.app.bench.distributed` (the rank side below), the machine's
threads split evenly over the ranks, so both runs use the same cores. On a 2-core machine this shows the
cost of the gradient exchange rather than a speed-up; on a cluster, run the rank side with the cluster's
launcher (``srun -n 8 python -m excite.app.bench.distributed --batch 16``).
"""
import argparse
import json
import os
import statistics
import subprocess
import sys
import time

CASE = "train_distributed_mobilenet_v3_small_b16"
MODEL, BATCH, SIZE = "mobilenet_v3_small", 16, 224


def measure(ranks, threads, steps=5, warmup=2, batch=BATCH, size=SIZE, timeout=1800):
    """Median seconds of one data-parallel training step on ``ranks`` ranks (each ``batch`` images)."""
    from ..launch import find_mpiexec

    mpiexec = find_mpiexec()
    if mpiexec is None:
        from ...distributed import INSTALL_HINT

        raise RuntimeError(f"the distributed case needs mpiexec: {INSTALL_HINT}")
    env = dict(os.environ, EXCITE_NUM_THREADS=str(max(1, threads // ranks)))
    command = [mpiexec, "-n", str(ranks), sys.executable, "-m", "excite.app.bench.distributed", "--steps", str(steps),
               "--warmup", str(warmup), "--batch", str(batch), "--size", str(size)]
    out = subprocess.run(command, capture_output=True, text=True, env=env, timeout=timeout, stdin=subprocess.DEVNULL)
    if out.returncode != 0:
        raise RuntimeError(f"the distributed case failed on {ranks} ranks: {out.stderr.strip()[-2000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])["step_s"]


def row(threads, reps):
    """The case's row: step seconds at 1 rank as ``excite_s``, and images/s at 1 and 2 ranks with the efficiency."""
    one = measure(1, threads, steps=reps)
    two = measure(2, threads, steps=reps)
    per_s_1, per_s_2 = BATCH / one, 2 * BATCH / two
    return {"case": CASE, "excite_s": one, "images_per_s_1_rank": per_s_1, "images_per_s_2_ranks": per_s_2,
            "scaling_efficiency": per_s_2 / (2 * per_s_1)}


def _rank_side(steps, warmup, batch, size):
    import numpy as np

    import excite as ex
    import excite.nn.functional as F
    from excite import distributed as dist
    from excite import optim
    from excite.vision import models

    dist.init()
    ex.manual_seed(0)
    model = models.get_model(MODEL).train()
    dist.broadcast_parameters(model)
    opt = optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    x = ex.randn(batch, 3, size, size)
    y = ex.tensor((np.arange(batch) + dist.rank()) % 1000)
    times = []
    for i in range(warmup + steps):
        dist.barrier()  # every rank starts the step together: the time is the slowest rank's
        t0 = time.perf_counter()
        opt.zero_grad()
        F.cross_entropy(model(x), y).backward()
        dist.all_reduce_gradients(model)
        opt.step()
        if i >= warmup:
            times.append(time.perf_counter() - t0)
    slowest = dist._world().allreduce(statistics.median(times), op=_max())
    if dist.rank() == 0:
        print(json.dumps({"ranks": dist.world_size(), "step_s": slowest}), flush=True)


def _max():
    from mpi4py import MPI

    return MPI.MAX


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="the rank side of the distributed benchmark case")
    parser.add_argument("--steps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=2)
    parser.add_argument("--batch", type=int, default=BATCH)
    parser.add_argument("--size", type=int, default=SIZE)
    args = parser.parse_args()
    _rank_side(args.steps, args.warmup, args.batch, args.size)
