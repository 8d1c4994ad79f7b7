"""The ranks of a distributed training run: which one this process is, and how they agree and step together."""
import dataclasses

import numpy as np

from ..errors import InvalidArgumentError


def _ranks(distributed):
    """(rank, world size) of this process: (0, 1) unless ``distributed`` (then excite.distributed is initialised)."""
    if not distributed:
        return 0, 1
    from .. import distributed as dist

    dist.init()
    return dist.rank(), dist.world_size()


class TrainerRanks:
    """The Trainer's exchanges between MPI ranks (a base class of Trainer; one process: world 1, no exchange)."""

    # -- the ranks of a distributed run agree ----------------------------------------------------
    def _sum_over_ranks(self, values):
        """``values`` (numbers) summed over the ranks; as they are in a single process."""
        if self.world == 1:
            return list(values)
        from mpi4py import MPI

        from .. import distributed

        array = np.array(values, dtype=np.float64)
        distributed._world().Allreduce(MPI.IN_PLACE, array, op=MPI.SUM)
        return array.tolist()

    def _agree_to_stop(self, stop):
        """A Ctrl-C seen by any rank stops every rank at the same batch."""
        if self.world > 1:
            stop.requested = self._sum_over_ranks([float(stop.requested)])[0] > 0

    def _check_ranks_agree(self):
        """Every rank runs the same configuration on the same model, starting from rank 0's weights."""
        from .. import distributed

        settings = {k: v for k, v in dataclasses.asdict(self.config).items() if k != "workers"}
        seen = distributed._world().allgather(settings)
        differing = sorted({k for other in seen for k in settings if other.get(k) != settings.get(k)})
        if differing:
            raise InvalidArgumentError(
                "the ranks disagree on the run: " + "; ".join(
                    f"{k}: " + ", ".join(f"rank {r} {other.get(k)!r}" for r, other in enumerate(seen))
                    for k in differing) + "; start every rank with the same options")
        # also refuses ranks that built different models (another --model, --weights or checkpoint)
        distributed.broadcast_parameters(self.model)

    def _distributed_step(self, batch, stop, stop_at):
        """One step of every rank on its share of the global batch; returns the images of the whole step.

        The ranks exchange their loss sums and image counts first (so all agree on the logged loss, on
        divergence, and on a step where no image could be read anywhere), then the gradients. Each rank's
        loss is weighted by its share of the step's images, so the averaged gradient is that of the mean
        loss over the global batch even when some images were unreadable.
        """
        import excite.nn.functional as F

        from .. import distributed
        from ..random import use_generator

        c = self.config
        if stop_at is not None and (self.epoch, self.step) == tuple(stop_at):
            stop.requested = True
        self._agree_to_stop(stop)
        if stop.requested:
            self._stop()
        loss, local = None, [0.0, 0.0, 0.0]
        with use_generator(np.random.default_rng([c.seed, 4, self.epoch, self.step, self.rank])):
            if batch is not None:
                images, labels = batch
                logits = self.model(images)
                loss = F.cross_entropy(logits, labels, label_smoothing=c.label_smoothing)
                n = len(labels)
                local = [float(loss.item()) * n, float((logits.data.argmax(1) == labels.data).sum()), float(n)]
            loss_sum, correct, seen = self._sum_over_ranks(local)
            if seen == 0:  # every image of the step unreadable on every rank: no update
                self.step += 1
                self.scheduler.step()
                return 0
            problem = self.guard.check(loss_sum / seen)
            if problem is not None:
                self._diverged(problem)
            self.optimizer.zero_grad(set_to_none=True)
            if loss is not None:
                (loss * (local[2] * self.world / seen)).backward()
        distributed.all_reduce_gradients(self.model)
        self.optimizer.step()
        self.scheduler.step()
        self.step += 1
        self.totals["loss"] += loss_sum
        self.totals["correct"] += int(correct)
        self.totals["seen"] += int(seen)
        return int(seen)
