"""The worker side of local SGD: train one rank's share of a round on a private replica.

The worker copies the round's global state (parameters, momentum buffer) from the driver's
segment, takes one SGD step per batch of the share with :func:`otpnn.local_sgd.local_steps`
(the serial reference's arithmetic), and only then writes the replica into its rank's row.
So a worker that crashes, hangs or is killed mid-share leaves nothing half-done that matters:
the redo starts from the same global state and overwrites the row whole. A worker killed
while it trained (a hung thread woken by its kill) writes nothing.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from otpnn.local_sgd import Batch, LocalBuffers, local_steps
from otpnn.lr_schedule import LrSchedule
from otpnn.training.drivers.task import WorkerSide, WorkerTask
from supervision.shm import ArrayDescriptor

ShareResult = tuple[tuple[tuple[float, ...], tuple[int, ...]], ...]  # per batch: shard results


class ShareAbandoned(RuntimeError):
    """The worker was killed while it trained: its replica is not written."""


@dataclass(frozen=True, slots=True)
class TrainShare(WorkerTask):
    """Coordinator -> Worker: train rank ``rank``'s share ``batches`` of a round of epoch
    ``epoch`` from ``start`` (2, P: parameters, momentum) into row ``rank`` of ``replicas``
    (N, 2, P). The reply: per batch, its shards' loss sums and correct counts. ``fault``: an
    injected fault to act out first (see :mod:`otpnn.faults`)."""

    epoch: int
    rank: int
    lr_schedule: LrSchedule
    shard_size: int
    start: ArrayDescriptor
    replicas: ArrayDescriptor
    batches: tuple[Batch, ...]
    fault: str | None = None

    def perform(self, worker: WorkerSide) -> ShareResult:
        if self.fault is not None:
            worker.inject(self.fault)
        start = worker.attach("local-sgd.start", self.start)
        params, velocity, results = train_share(
            self.lr_schedule, worker.sizes, worker.activation, self.shard_size, start,
            worker.images, worker.labels, worker.order(self.epoch), self.batches,
        )  # fmt: skip
        if worker.killed.is_set():
            raise ShareAbandoned(f"worker {worker.index} was killed while it trained")
        row = worker.attach("local-sgd.replicas", self.replicas)[self.rank]
        row[0], row[1] = params, velocity
        return results


def train_share(
    lr_schedule: LrSchedule,
    sizes: tuple[int, ...],
    activation: str,
    shard_size: int,
    start: np.ndarray,
    images: np.ndarray,
    labels: np.ndarray,
    order: np.ndarray,
    batches: tuple[Batch, ...],
) -> tuple[np.ndarray, np.ndarray, ShareResult]:
    """A replica trained from ``start`` (2, P: parameters, momentum) one step per batch, in
    private arrays: (parameters, momentum, per-batch shard results). Every worker kind's
    share message calls this."""
    params, velocity = start[0].copy(), start[1].copy()
    n_shards = -(-max(b.rows for b in batches) // shard_size)
    buffers = LocalBuffers(n_shards, sizes, params.dtype)
    results = local_steps(
        lr_schedule, sizes, activation, shard_size, params, velocity, images, labels, order,
        batches, buffers,
    )  # fmt: skip
    return params, velocity, tuple((tuple(losses), tuple(c)) for losses, c in results)
