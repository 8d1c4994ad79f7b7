"""Data-parallel training over MPI (mpi4py): ranks, the broadcast of weights, bucketed gradient averaging,
`DistributedDataParallel` and `DistributedSampler`, with torch.distributed's names and semantics.

Launch a script on N processes with ``mpiexec -n N python train.py`` (the ``excite[distributed]`` extra
installs mpi4py and an MPI with its ``mpiexec``). Each rank holds a full copy of the model, trains on its
own share of each global batch (`DistributedSampler`), and the gradients are averaged over the ranks
after every backward, so every rank takes the same optimizer step. BatchNorm uses each rank's own batch
statistics (as torch's DistributedDataParallel does; there is no SyncBatchNorm); with
`DistributedDataParallel`'s ``broadcast_buffers`` its running averages are rank 0's, broadcast before
each training forward. Functions other than `init` and `is_initialized` need `init` called first.
"""
import contextlib
import hashlib
import math
import weakref

import numpy as np

from .errors import ExciteError, InvalidArgumentError
from .nn import Module

INSTALL_HINT = 'pip install "excite[distributed]"'
DEFAULT_BUCKET_CAP_MB = 25  # torch's DistributedDataParallel default

_comm = None


def _mpi():
    try:
        from mpi4py import MPI
    except ImportError:
        raise ExciteError(f"distributed training needs mpi4py and an MPI library: {INSTALL_HINT}") from None
    return MPI


def init():
    """Join the world of processes started by ``mpiexec`` (a process started alone is a world of one).

    Safe to call more than once; returns the communicator (mpi4py's ``MPI.COMM_WORLD``).
    """
    global _comm
    if _comm is None:
        _comm = _mpi().COMM_WORLD
    return _comm


def is_initialized():
    return _comm is not None


def _world():
    if _comm is None:
        raise ExciteError("excite.distributed is not initialized: call excite.distributed.init() first")
    return _comm


def rank():
    """This process's rank, 0 ... world_size() - 1 (rank 0 is the one that prints and saves)."""
    return _world().Get_rank()


def world_size():
    return _world().Get_size()


def barrier():
    _world().Barrier()


def abort(code=1):
    """End every rank of the job at once (a rank that failed must not leave the others waiting forever)."""
    _world().Abort(code)


# ----- weights and gradients --------------------------------------------------------------------
def _buckets(tensors, arrays_of, cap_bytes):
    """Groups of ``tensors`` whose arrays share a dtype and together hold at most ``cap_bytes`` (a larger
    tensor gets a bucket of its own), in the order given."""
    by_dtype = {}
    for t in tensors:
        by_dtype.setdefault(arrays_of(t).dtype, []).append(t)
    for group in by_dtype.values():
        bucket, size = [], 0
        for t in group:
            nbytes = arrays_of(t).nbytes
            if bucket and size + nbytes > cap_bytes:
                yield bucket
                bucket, size = [], 0
            bucket.append(t)
            size += nbytes
        if bucket:
            yield bucket


def _signature(model):
    """A hash of the names, shapes and dtypes of the model's parameters and buffers, and a short description."""
    state = list(model.named_parameters()) + list(model.named_buffers())
    text = ";".join(f"{name}:{tuple(t.shape)}:{t.data.dtype}" for name, t in state)
    count = sum(int(np.prod(t.shape)) for _, t in model.named_parameters())
    return hashlib.sha256(text.encode()).hexdigest(), f"{type(model).__name__} with {count:,} parameters"


def check_same_model(model):
    """Raise ExciteError on every rank unless every rank holds the same architecture (names, shapes, dtypes)."""
    comm = _world()
    digest, described = _signature(model)
    seen = comm.allgather((digest, described))
    if any(d != seen[0][0] for d, _ in seen):
        ranks = "; ".join(f"rank {r}: {desc} ({d[:8]})" for r, (d, desc) in enumerate(seen))
        raise ExciteError(f"the ranks disagree on the model (its parameter names and shapes differ): {ranks}; "
                          "start every rank with the same --model, --weights and checkpoint")


def broadcast_parameters(model, root=0, bucket_cap_mb=DEFAULT_BUCKET_CAP_MB):
    """Overwrite every rank's parameters and buffers with those of rank ``root`` (in place).

    First checks that all ranks hold the same architecture (`check_same_model`).
    """
    comm = _world()
    check_same_model(model)
    if comm.Get_size() == 1:
        return
    tensors = list(model.parameters()) + list(model.buffers())
    _broadcast(comm, tensors, root, bucket_cap_mb)


def _broadcast(comm, tensors, root, bucket_cap_mb):
    for bucket in _buckets(tensors, lambda t: t.data, bucket_cap_mb * 2**20):
        flat = np.concatenate([t.data.ravel() for t in bucket])
        comm.Bcast(flat, root=root)
        offset = 0
        for t in bucket:
            n = t.data.size
            t.data[...] = flat[offset:offset + n].reshape(t.data.shape)
            offset += n


def all_reduce_gradients(model, bucket_cap_mb=DEFAULT_BUCKET_CAP_MB):
    """Replace each parameter's ``.grad`` by its mean over the ranks, in a few large messages.

    The gradients travel in flat buckets of at most ``bucket_cap_mb`` MB each (one per dtype at least),
    not one message per tensor. A parameter without a gradient on some ranks (unused there) counts as a
    zero gradient on those; one without a gradient on every rank keeps ``grad = None`` everywhere.
    """
    from .tensor import Tensor

    comm = _world()
    size = comm.Get_size()
    if size == 1:
        return
    MPI = _mpi()
    params = [p for p in model.parameters() if p.requires_grad]
    has_grad = np.array([p.grad is not None for p in params], dtype=np.int32)
    comm.Allreduce(MPI.IN_PLACE, has_grad, op=MPI.MAX)
    active = []
    for p, present in zip(params, has_grad):
        if present:
            if p.grad is None:
                p.grad = Tensor(np.zeros_like(p.data))
            active.append(p)
    # the last layers' gradients first, as torch's DDP buckets them (they are ready first)
    for bucket in _buckets(active[::-1], lambda p: p.grad.data, bucket_cap_mb * 2**20):
        flat = np.concatenate([p.grad.data.ravel() for p in bucket])
        comm.Allreduce(MPI.IN_PLACE, flat, op=MPI.SUM)
        flat /= size
        offset = 0
        for p in bucket:
            n = p.grad.data.size
            p.grad.data = flat[offset:offset + n].reshape(p.grad.data.shape)
            offset += n


# ----- the wrapper -----------------------------------------------------------------------------
class DistributedDataParallel(Module):
    """Wrap ``module`` for data-parallel training, as torch.nn.parallel.DistributedDataParallel.

    At construction rank 0's parameters and buffers are broadcast to every rank (after checking that all
    ranks hold the same architecture). ``ddp(x)`` runs ``module(x)``; when a backward pass follows a
    training forward, the gradients are averaged over the ranks as soon as that backward ends (a hook
    of excite's autograd engine), so ``loss.backward(); optimizer.step()`` works unchanged. Inside
    ``with ddp.no_sync():`` the gradients stay local (to accumulate several batches before a step).
    With ``broadcast_buffers`` (default, as torch) the buffers (BatchNorm's running statistics) are
    rank 0's, broadcast before each training forward; batch statistics are each rank's own.
    ``ddp.module`` is the wrapped model; save ``ddp.module.state_dict()``.
    """

    def __init__(self, module, broadcast_buffers=True, bucket_cap_mb=DEFAULT_BUCKET_CAP_MB):
        from .autograd.engine import register_post_backward_hook

        super().__init__()
        if not isinstance(module, Module):
            raise InvalidArgumentError(f"DistributedDataParallel wraps a Module, got {type(module).__name__}")
        if not bucket_cap_mb > 0:
            raise InvalidArgumentError(f"bucket_cap_mb must be positive, got {bucket_cap_mb!r}")
        self.module = module
        self.broadcast_buffers = bool(broadcast_buffers)
        self.bucket_cap_mb = bucket_cap_mb
        self.require_backward_grad_sync = True
        self._pending = False
        broadcast_parameters(module, bucket_cap_mb=bucket_cap_mb)
        this = weakref.ref(self)  # the engine's hook must not keep the wrapper alive

        def after_backward():
            ddp = this()
            if ddp is None:
                handle.remove()
            elif ddp._pending:
                ddp._pending = False
                all_reduce_gradients(ddp.module, ddp.bucket_cap_mb)

        handle = register_post_backward_hook(after_backward)

    def forward(self, *args, **kwargs):
        from .autograd import is_grad_enabled

        if self.training and self.broadcast_buffers and world_size() > 1:
            buffers = list(self.module.buffers())
            if buffers:
                _broadcast(_world(), buffers, 0, self.bucket_cap_mb)
        if self.training and is_grad_enabled() and self.require_backward_grad_sync:
            self._pending = True
        return self.module(*args, **kwargs)

    @contextlib.contextmanager
    def no_sync(self):
        previous = self.require_backward_grad_sync
        self.require_backward_grad_sync = False
        try:
            yield
        finally:
            self.require_backward_grad_sync = previous

    def extra_repr(self):
        return f"world_size={world_size()}, bucket_cap_mb={self.bucket_cap_mb}"


# ----- data --------------------------------------------------------------------------------------
class DistributedSampler:
    """Each rank's share of a dataset, as torch.utils.data.distributed.DistributedSampler.

    Every rank draws the same permutation (from ``seed + epoch``, with excite's generator: the order
    differs from torch's, the partitioning rule is torch's) and keeps ``indices[rank::num_replicas]``.
    Without ``drop_last`` the list is first padded to a multiple of ``num_replicas`` by repeating its
    first indices; with it, the tail that does not divide evenly is dropped. Call ``set_epoch(epoch)``
    before each epoch for a new shuffle (a DataLoader does it with its own epoch counter).
    """

    def __init__(self, dataset, num_replicas=None, rank=None, shuffle=True, seed=0, drop_last=False):
        if num_replicas is None:
            num_replicas = world_size()
        if rank is None:
            rank = globals()["rank"]()
        if isinstance(num_replicas, bool) or int(num_replicas) != num_replicas or num_replicas < 1:
            raise InvalidArgumentError(f"num_replicas must be a positive integer, got {num_replicas!r}")
        if rank >= num_replicas or rank < 0:
            raise InvalidArgumentError(f"Invalid rank {rank}, rank should be in the interval [0, {num_replicas - 1}]")
        self.dataset = dataset
        self.num_replicas = int(num_replicas)
        self.rank = int(rank)
        self.epoch = 0
        self.drop_last = drop_last
        n = len(dataset)
        if drop_last and n % self.num_replicas != 0:
            self.num_samples = math.ceil((n - self.num_replicas) / self.num_replicas)
        else:
            self.num_samples = math.ceil(n / self.num_replicas)
        self.total_size = self.num_samples * self.num_replicas
        self.shuffle = shuffle
        self.seed = int(seed)

    def __iter__(self):
        n = len(self.dataset)
        if self.shuffle:
            indices = np.random.default_rng(self.seed + self.epoch).permutation(n).tolist()
        else:
            indices = list(range(n))
        if not self.drop_last:
            padding = self.total_size - len(indices)
            if padding <= len(indices):
                indices += indices[:padding]
            else:
                indices += (indices * math.ceil(padding / len(indices)))[:padding]
        else:
            indices = indices[:self.total_size]
        return iter(indices[self.rank:self.total_size:self.num_replicas])

    def __len__(self):
        return self.num_samples

    def set_epoch(self, epoch):
        self.epoch = int(epoch)


__all__ = ["init", "is_initialized", "rank", "world_size", "barrier", "abort", "broadcast_parameters",
           "all_reduce_gradients", "check_same_model", "DistributedDataParallel", "DistributedSampler",
           "INSTALL_HINT"]
