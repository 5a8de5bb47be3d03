"""The local SGD driver: workers train replicas for a round, the driver averages them.

The algorithm, its schedule and its arithmetic are :mod:`otpnn.local_sgd`'s; this module runs
it on thread and process workers:

- warm-up steps (1..W) are synchronous steps, run by an inner
  :class:`~otpnn.training.drivers.stepwise.StepwiseDriver` (their bits are sync SGD's);
- a local round sends each active rank's share to a live worker (:class:`TrainShare`; with
  fewer live workers than ranks, one worker trains several shares, one after another). A
  share whose worker crashes, exits, is killed or gives no reply within its deadline (then it
  is killed) is sent again from the same global state, so the replica restarts from the last
  average and redoes its local steps;
- once every share is in, the replicas are averaged in rank order into the global state and
  the round's steps are committed, in order: a round is all or nothing.

Steps are batches, as in sync SGD (the same count per epoch, so progress, ``--checkpoint-every``
and ``step=N`` faults count the same units), but the state is whole only at the end of a round:
:meth:`LocalSGDDriver.boundary` tells the coordinator where it may stop. Faults:

- a worker's ``step=N`` (``shard=N``) fault fires in the first round where a share given to
  that worker reaches step N (the N-th micro-shard), acted out before the share's local steps;
  ``worker=any`` goes to the worker given the round's first share;
- a coordinator, pool or loader ``step=N`` fault fires at the first averaging boundary at or
  after step N-1 (there is no whole state in between to restart from);
- ``--checkpoint-every K`` checkpoints at the first boundary at or after each multiple of K;
- ``--step-timeout`` is the time a worker may take for a share (its local steps of a round;
  for ``k`` shares queued on one worker, ``k`` times that).

How the round's start reaches a worker and its replica comes back is the
:class:`ShareTransport`'s business: shared memory here, Ray's object store in
:mod:`otpnn.training.ray_local_sgd` (one put per round, replicas in the replies). Neither
changes the arithmetic, so the bits are the same.
"""

from __future__ import annotations

import math
import time
from typing import Any, Protocol

import numpy as np
import pykka

from otpnn.local_sgd import Batch, RoundSchedule, average_into
from otpnn.model import num_params
from otpnn.training import segments
from otpnn.training.drivers.base import (
    Driver,
    Host,
    Workers,
    await_reply,
    loss_kind,
    send,
)
from otpnn.training.drivers.local_sgd_task import ShareResult, TrainShare
from otpnn.training.drivers.stepwise import StepwiseDriver
from supervision.reasons import describe
from supervision.refs import ActorHandle
from supervision.shm import SharedArray

InFlight = tuple[int, ActorHandle, int, "pykka.Future[Any] | None"]  # index, worker, rank, reply


class ShareTransport(Protocol):
    """How a round's start reaches the workers and their replicas come back."""

    def open_epoch(self, epoch: int) -> None:
        """Epoch ``epoch``'s order has been drawn."""
        ...

    def begin_round(self) -> None:
        """The global state now holds the next round's start (publish it if need be)."""
        ...

    def message(self, rank: int, epoch: int, batches: tuple[Batch, ...], fault: str | None) -> Any:
        """What a worker is sent to train rank ``rank``'s share ``batches``."""
        ...

    def accept(self, rank: int, reply: Any) -> ShareResult:
        """A worker's reply, once rank ``rank``'s replica is in its row of the replicas."""
        ...


class SharedMemoryShares:
    """Thread and process workers: descriptors in the message; the worker writes its row."""

    def __init__(self, host: Host, start: SharedArray, replicas: SharedArray) -> None:
        self._host, self._start, self._replicas = host, start, replicas

    def open_epoch(self, epoch: int) -> None:
        pass  # the loader's permutation segment already holds it

    def begin_round(self) -> None:
        pass  # the workers read the global state's segment

    def message(
        self, rank: int, epoch: int, batches: tuple[Batch, ...], fault: str | None
    ) -> TrainShare:
        cfg = self._host.config
        return TrainShare(
            epoch, rank, self._host.lr_schedule, cfg.effective_shard_size, self._start.descriptor(),
            self._replicas.descriptor(), batches, fault,
        )  # fmt: skip

    def accept(self, rank: int, reply: Any) -> ShareResult:
        return reply


class LocalSGDDriver(Driver):
    name = "local-sgd-stepwise"

    def __init__(self, host: Host) -> None:
        super().__init__(host)
        self.schedule = RoundSchedule.of(host.config, host.batches.steps_per_epoch)
        self._warmup: StepwiseDriver | None = None  # while warm-up steps remain

    @classmethod
    def unsupported(cls, backend: str) -> str | None:
        return None  # messages only: any worker kind (Ray through its transport)

    def boundary(self, step: int) -> int:
        return self.schedule.last_of_round(step)

    def start(self, step: int, params: np.ndarray, velocity: np.ndarray | None) -> None:
        cfg = self.host.config
        n_params, dtype = num_params(cfg.layer_sizes), np.dtype(cfg.dtype)
        self._global = self._own(segments.create((2, n_params), dtype))  # params, momentum
        self._replicas = self._own(segments.create((self.schedule.workers, 2, n_params), dtype))
        self._global.array[0] = params
        self._global.array[1] = 0 if velocity is None else velocity
        self._transport = self._make_transport()
        if step < self.schedule.warmup_steps:
            self._warmup = StepwiseDriver(self.host)
            self._warmup.start(step, params, velocity)

    def _make_transport(self) -> ShareTransport:
        if self.host.config.backend == "ray":
            from otpnn.training.ray_local_sgd import RayShares  # Ray only where it is used

            return RayShares(self.host, self._global, self._replicas)
        return SharedMemoryShares(self.host, self._global, self._replicas)

    def state(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        if self._warmup is not None:
            return self._warmup.state(step)
        return self._global.array[0], self._global.array[1]

    def open_epoch(self, epoch: int) -> None:
        if self._warmup is not None:
            self._warmup.open_epoch(epoch)
        self._transport.open_epoch(epoch)

    def close(self) -> None:
        if self._warmup is not None:
            self._warmup.close()
        super().close()

    # -- rounds -------------------------------------------------------------------------------
    def run(self, first: int, last: int, epoch: int) -> None:
        """Warm-up steps through the inner synchronous driver, then one round at a time; a
        fault planned meanwhile ends the stretch early (at a boundary)."""
        warmup = self._warmup
        if warmup is not None:
            if first <= self.schedule.warmup_steps:  # steps are boundaries: come back after
                warmup.run(first, min(last, self.schedule.warmup_steps), epoch)
                return
            params, velocity = warmup.state(first - 1)  # warm-up done: the global state
            self._global.array[0], self._global.array[1] = params, velocity
            warmup.close()
            self._warmup = None
        version = self.host.planner.book.version
        for rnd in self.schedule.rounds(first, last):
            self._transport.begin_round()
            results = self._train(rnd.shares, epoch)
            active = self._replicas.array[: len(rnd.shares)]
            average_into(active[:, 0], self._global.array[0])
            average_into(active[:, 1], self._global.array[1])
            for rank, share in enumerate(rnd.shares):
                for step, (losses, corrects) in zip(share, results[rank], strict=True):
                    self.host.commit(step, losses, corrects)
            self.host.show_progress(rnd.last, epoch)
            if self.host.planner.book.version != version:
                break

    def _train(self, shares: tuple[range, ...], epoch: int) -> dict[int, ShareResult]:
        """Every rank's share trained once, whatever happens to the workers on the way."""
        host = self.host
        results: dict[int, ShareResult] = {}
        pending = list(range(len(shares)))
        while pending:
            workers = host.await_workers()
            in_flight = self._dispatch(shares, pending, epoch, workers)
            per_worker = math.ceil(len(pending) / len(workers))  # shares in a worker's queue
            deadline = time.monotonic() + host.step_timeout * per_worker
            lost: list[int] = []
            for index, worker, rank, future in in_flight:
                try:
                    results[rank] = self._transport.accept(
                        rank, await_reply(self.host, future, deadline)
                    )
                except pykka.Timeout:
                    host.failure(shares[rank][0], index, worker, "hang", "no reply in time")
                    worker.kill()
                    lost.append(rank)
                except Exception as e:  # crashed, exited, killed: the share is trained again
                    host.failure(shares[rank][0], index, worker, loss_kind(e), describe(e))
                    lost.append(rank)
            for rank in lost:
                for step in shares[rank]:
                    host.lost_step(step)
            pending = lost
        return results

    def _dispatch(
        self,
        shares: tuple[range, ...],
        ranks: list[int],
        epoch: int,
        workers: Workers,
    ) -> list[InFlight]:
        """Send rank ``ranks[i]``'s share to live worker ``i mod len(workers)``, with the fault
        it acts out first, if any (fired on dispatch)."""
        host = self.host
        in_flight: list[InFlight] = []
        taken: set[int] = set()
        for i, rank in enumerate(ranks):
            index, worker = workers[i % len(workers)]
            planned = host.planner.for_share(shares[rank], epoch, index, first=i == 0, taken=taken)
            if planned is not None:
                if planned.fault_id is not None:
                    taken.add(planned.fault_id)
                host.planner.fire(planned)
                host.fault_fired(planned, planned.step, index)
            batches = tuple(Batch(s, *self._rows(s)) for s in shares[rank])
            action = None if planned is None else planned.action
            msg = self._transport.message(rank, epoch, batches, action)
            in_flight.append((index, worker, rank, send(worker, msg)))
        return in_flight

    def _rows(self, step: int) -> tuple[int, int]:
        offset, bounds = self.host.batches.shards(step)
        return offset, bounds[-1][1]
