"""The rank side of tests/test_distributed.py, run as ``mpiexec -n 2 python distributed_worker.py MODE OUT``.

``train``: a few data-parallel SGD steps of a small float64 SE network (BatchNorm in eval) wrapped in
DistributedDataParallel, each rank starting from different random weights (the broadcast must fix
that) and reading its own share of each global batch through DistributedSampler; rank 0 writes the
final weights and whether every rank held the same weights after every step. It also checks the
gradient averaging of parameters unused on some ranks and the refusal of ranks that disagree on the
model. ``raise``: rank 1 raises in the middle of a step while rank 0 waits in the gradient exchange.
The data, model and global batches come from the functions here, which the test reuses for its
single-process reference.
"""
import faulthandler
import hashlib
import json
import sys

import numpy as np

import excite as ex
import excite.nn as nn
import excite.nn.functional as F

PER_RANK_BATCH, STEPS, WORLD = 4, 3, 2


def dataset():
    rng = np.random.default_rng(11)
    images = rng.standard_normal((26, 3, 8, 8))
    labels = rng.integers(0, 5, 26)
    return ex.data.TensorDataset(ex.tensor(images), ex.tensor(labels))


def model(seed):
    ex.manual_seed(seed)
    net = nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(),
                        nn.SqueezeExcitation(8, 4), nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(8, 5))
    net = net.double()
    net[1].running_mean.data[...] = np.linspace(-0.2, 0.2, 8)  # BatchNorm in eval: exact, no batch statistics
    net.train()
    net[1].eval()
    return net


def optimizer(net):
    return ex.optim.SGD(net.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)


def rank_batches(data, rank):
    """The index lists of ``rank``'s batches in epoch 0."""
    from excite.distributed import DistributedSampler

    sampler = DistributedSampler(data, num_replicas=WORLD, rank=rank, shuffle=True, seed=5)
    sampler.set_epoch(0)
    order = list(sampler)
    return [order[i * PER_RANK_BATCH:(i + 1) * PER_RANK_BATCH] for i in range(STEPS)]


def batch(data, indices):
    images, labels = zip(*(data[i] for i in indices))
    return ex.stack(list(images)), ex.stack(list(labels))


def digest(net):
    h = hashlib.sha256()
    for t in net.state_dict().values():
        h.update(np.ascontiguousarray(t.numpy()).tobytes())
    return h.hexdigest()


def train(out):
    from excite import distributed as dist

    dist.init()
    rank = dist.rank()
    data = dataset()
    net = model(seed=0 if rank == 0 else 100 + rank)  # the broadcast makes every rank start from rank 0's
    ddp = dist.DistributedDataParallel(net)
    opt = optimizer(ddp)
    same_after_each_step = []
    for indices in rank_batches(data, rank):
        images, labels = batch(data, indices)
        opt.zero_grad()
        F.cross_entropy(ddp(images), labels).backward()
        opt.step()
        same_after_each_step.append(len(set(dist._world().allgather(digest(net)))) == 1)

    # inside no_sync the gradients stay each rank's own (to accumulate before a step)
    images, labels = batch(data, rank_batches(data, rank)[0])
    opt.zero_grad()
    with ddp.no_sync():
        F.cross_entropy(ddp(images), labels).backward()
    local = net[6].weight.grad.numpy().copy()
    no_sync_local = not np.array_equal(*dist._world().allgather(local))

    # a parameter used on rank 0 only: its gradient is averaged with rank 1's zero; one used nowhere stays None
    ex.manual_seed(1)
    layer = nn.Linear(3, 2).double()
    layer.register_parameter("extra", nn.Parameter(ex.ones(2, dtype=ex.float64)))
    layer.register_parameter("unused", nn.Parameter(ex.ones(2, dtype=ex.float64)))
    loss = layer(ex.ones(1, 3, dtype=ex.float64)).sum()
    if rank == 0:
        loss = loss + (layer.extra * 3.0).sum()
    loss.backward()
    dist.all_reduce_gradients(layer)
    extra_grad = layer.extra.grad.numpy().tolist()
    unused_is_none = layer.unused.grad is None

    # ranks holding different architectures are refused on every rank
    try:
        dist.broadcast_parameters(nn.Linear(3, 2 + rank))
        mismatch = None
    except ex.ExciteError as e:
        mismatch = str(e)
    reports = dist._world().gather(dict(rank=rank, extra_grad=extra_grad, unused_is_none=unused_is_none,
                                        mismatch=mismatch, same=same_after_each_step,
                                        no_sync_local=no_sync_local), root=0)
    if rank == 0:
        np.savez(out + ".npz", **{k: v.numpy() for k, v in net.state_dict().items()})
        with open(out + ".json", "w") as f:
            json.dump(dict(world_size=dist.world_size(), ranks=reports), f)


def raise_in_a_rank(out):
    from excite import distributed as dist
    from excite.app.cli import run_ranked

    def job():
        dist.init()
        net = nn.Linear(3, 2)
        ddp = dist.DistributedDataParallel(net)
        if dist.rank() == 1:
            raise ex.InvalidArgumentError("rank 1 cannot read its batch")
        ddp(ex.ones(1, 3)).sum().backward()  # rank 0 waits here for rank 1's gradients
        return 0

    sys.exit(run_ranked(job))


def resume(out):
    """A 2-rank `excite train` run stopped mid-epoch (as by Ctrl-C) and resumed, next to one never stopped."""
    import os

    from excite import distributed as dist
    from excite.app.train import Trainer, TrainConfig, TrainingInterrupted

    config = TrainConfig(epochs=2, limit=48, batch_size=8)
    Trainer(config, os.path.join(out, "straight"), progress=False, distributed=True).run()
    try:
        Trainer(config, os.path.join(out, "stopped"), progress=False, distributed=True).run(_stop_at=(1, 1))
        raise AssertionError("the run did not stop")
    except TrainingInterrupted:
        pass
    dist.barrier()  # last.pth is written before any rank reads it
    Trainer.resume(os.path.join(out, "stopped", "last.pth"), progress=False, distributed=True).run()


HANG_SECONDS = 220  # below the launching test's timeout: a rank stuck in MPI prints where, then exits non-zero

if __name__ == "__main__":
    faulthandler.dump_traceback_later(HANG_SECONDS, exit=True)
    mode, out = sys.argv[1], sys.argv[2]
    {"train": train, "raise": raise_in_a_rank, "resume": resume}[mode](out)
