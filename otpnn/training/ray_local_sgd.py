"""Local SGD on Ray: the local SGD driver's transport through Ray's object store.

- the round's start (global parameters and momentum, one (2, P) array) is put once per round;
  a share trained again after a failure reuses the same ref;
- a Ray worker fetches it (cached by ref) and the epoch's order, trains its share with
  :func:`~otpnn.training.drivers.local_sgd_task.train_share`, the code every worker kind runs,
  and returns the replica in its reply;
- the transport copies the replica into its rank's row, so the average (and the checksum) is
  the one of the thread and process backends.

One exchange per worker per round (H local steps) instead of one per step: what makes local
SGD pay where a step's exchange crosses a network.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import ray
from ray import ObjectRef

from otpnn.local_sgd import Batch
from otpnn.lr_schedule import LrSchedule
from otpnn.training.drivers.base import Host
from otpnn.training.drivers.local_sgd_task import ShareResult, train_share
from otpnn.training.ray_backend import EpochOrder, RayTask, RayWorker
from otpnn.training.worker import StalePermutation
from supervision.shm import SharedArray


@dataclass(frozen=True, slots=True)
class RayTrainShare(RayTask):
    """Coordinator -> Ray worker: train rank ``rank``'s share ``batches`` of a round of epoch
    ``epoch`` from the state in ``start``; reply (parameters, momentum, per-batch results)."""

    epoch: int
    rank: int
    lr_schedule: LrSchedule
    shard_size: int
    start: ObjectRef
    order: EpochOrder
    batches: tuple[Batch, ...]
    fault: str | None = None

    def perform_on(self, worker: RayWorker) -> tuple[np.ndarray, np.ndarray, ShareResult]:
        if self.fault is not None:
            worker.inject(self.fault)
        if self.order.epoch != self.epoch:
            raise StalePermutation(f"permutation is for epoch {self.order.epoch}, not {self.epoch}")
        return train_share(
            self.lr_schedule, worker.sizes, worker.activation, self.shard_size,
            worker.fetch("local-sgd.start", self.start), worker.images, worker.labels,
            worker.fetch("order", self.order.perm), self.batches,
        )  # fmt: skip


class RayShares:
    """The local SGD driver's transport for Ray workers (see the module)."""

    def __init__(self, host: Host, start: SharedArray, replicas: SharedArray) -> None:
        self._host, self._start, self._replicas = host, start, replicas
        self._start_ref: ObjectRef | None = None
        self._order: EpochOrder | None = None

    def open_epoch(self, epoch: int) -> None:
        loader = self._host.loader()
        self._order = loader.proxy().order().get(timeout=self._host.step_timeout)

    def begin_round(self) -> None:
        self._start_ref = ray.put(self._start.array)

    def message(
        self, rank: int, epoch: int, batches: tuple[Batch, ...], fault: str | None
    ) -> RayTrainShare:
        assert self._start_ref is not None, "a round is begun before its shares are sent"
        assert self._order is not None, "an epoch is opened before its first round"
        cfg = self._host.config
        return RayTrainShare(
            epoch, rank, self._host.lr_schedule, cfg.effective_shard_size, self._start_ref,
            self._order, batches, fault,
        )  # fmt: skip

    def accept(self, rank: int, reply: Any) -> ShareResult:
        params, velocity, results = reply
        row = self._replicas.array[rank]
        row[0], row[1] = params, velocity
        return results
