"""The stepwise driver: one message per live worker per step; the coordinator reduces and updates.

Any worker kind: Ray workers, which share no memory, and machines the lockstep barrier does not
support. Step t: the step's micro-shards are cut into contiguous runs, one per live worker; each
worker computes the summed gradient of each of its shards against the parameters after step
t-1; the driver reduces the gradients in shard order and applies the update into the other
parity row. Shards in flight are tracked by the worker incarnation that holds them and redone
elsewhere when it fails (a crash, or no reply within the step deadline: then it is killed).

How parameters reach a worker and gradients come back is the :class:`Transport`'s business:
shared memory here (the worker writes its gradient rows itself), Ray's object store in
:mod:`otpnn.training.ray_backend`. Neither changes the arithmetic, so the bits are the same.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from typing import Any, Protocol

import numpy as np
import pykka

from otpnn.model import num_params, reduce_in_order, sgd_update, shard_gradient
from otpnn.schedule import shard_bounds
from otpnn.training import segments
from otpnn.training.drivers.base import (
    Driver,
    Host,
    Workers,
    await_reply,
    loss_kind,
    send,
)
from otpnn.training.drivers.task import WorkerSide, WorkerTask
from otpnn.training.fault_planner import split
from supervision.reasons import describe
from supervision.refs import ActorHandle
from supervision.shm import ArrayDescriptor, SharedArray


@dataclass(frozen=True, slots=True)
class Shard:
    """Micro-shard ``index`` of the current batch: rows ``lo:hi`` of the epoch's permutation."""

    index: int
    lo: int
    hi: int


@dataclass(frozen=True, slots=True)
class ShardResult:
    index: int
    loss_sum: float
    correct: int


class WorkAbandoned(RuntimeError):
    """The worker was killed while it computed: it writes nothing more."""


def compute_shards(
    worker: WorkerSide,
    epoch: int,
    shards: tuple[Shard, ...],
    params: np.ndarray,
    grads: np.ndarray,
) -> tuple[ShardResult, ...]:
    """A worker's part of a step or update: each shard's summed gradient on ``params``, into
    its row ``grads[shard.index]``. A killed thread worker (whose thread Python cannot stop)
    leaves before its next shard: the rows are its redo's now."""
    order = worker.order(epoch)
    results = []
    for shard in shards:
        if worker.killed.is_set():
            raise WorkAbandoned(f"worker {worker.index} was killed while it computed")
        rows = order[shard.lo : shard.hi]
        loss_sum, correct = shard_gradient(
            params, worker.sizes, worker.activation, worker.images[rows], worker.labels[rows],
            grads[shard.index],
        )  # fmt: skip
        results.append(ShardResult(shard.index, loss_sum, correct))
    return tuple(results)


@dataclass(frozen=True, slots=True)
class ComputeShards(WorkerTask):
    """Coordinator -> Worker: compute these shards against parameter version ``step``, row
    ``(step - 1) % 2`` of ``params``.

    The worker writes the summed gradient of shard ``k`` into row ``k`` of ``grads`` and replies
    with one :class:`ShardResult` per shard. ``fault`` is an injected fault to act out first
    (see :mod:`otpnn.faults`), ``None`` almost always.
    """

    step: int
    epoch: int
    params: ArrayDescriptor
    grads: ArrayDescriptor
    shards: tuple[Shard, ...]
    fault: str | None = None

    def perform(self, worker: WorkerSide) -> tuple[ShardResult, ...]:
        if self.fault is not None:
            worker.inject(self.fault)
        params = worker.attach("params", self.params)[(self.step - 1) % 2]
        grads = worker.attach("grads", self.grads)
        return compute_shards(worker, self.epoch, self.shards, params, grads)


@dataclass(frozen=True)
class StepArrays:
    """The driver's arrays: (2, P) params and velocity by step parity, (max_shards, P) grads."""

    params: SharedArray
    velocity: SharedArray
    grads: SharedArray


class Transport(Protocol):
    """How a stepwise step's parameters reach the workers and their gradients come back."""

    def open_epoch(self, epoch: int) -> None:
        """Epoch ``epoch``'s order has been drawn."""
        ...

    def message(self, step: int, epoch: int, shards: tuple[Shard, ...], fault: str | None) -> Any:
        """What a worker is sent to compute ``shards`` of ``step``."""
        ...

    def accept(self, reply: Any) -> tuple[ShardResult, ...]:
        """A worker's reply, once its gradients are in their rows of the grads array."""
        ...


class SharedMemoryTransport:
    """Thread and process workers: descriptors in the message; the worker writes its rows."""

    def __init__(self, host: Host, arrays: StepArrays) -> None:
        self._arrays = arrays

    def open_epoch(self, epoch: int) -> None:
        pass  # the loader's permutation segment already holds it

    def message(
        self, step: int, epoch: int, shards: tuple[Shard, ...], fault: str | None
    ) -> ComputeShards:
        params, grads = self._arrays.params.descriptor(), self._arrays.grads.descriptor()
        return ComputeShards(step, epoch, params, grads, shards, fault)

    def accept(self, reply: Any) -> tuple[ShardResult, ...]:
        return tuple(reply)


class StepwiseDriver(Driver):
    name = "stepwise"

    @classmethod
    def unsupported(cls, backend: str) -> str | None:
        return None  # messages only: any worker kind, any machine

    def start(self, step: int, params: np.ndarray, velocity: np.ndarray | None) -> None:
        cfg = self.host.config
        dtype = np.dtype(cfg.dtype)
        n_params = num_params(cfg.layer_sizes)
        max_shards = len(shard_bounds(cfg.batch_size, cfg.effective_shard_size))
        self._arrays = StepArrays(
            self._own(segments.create((2, n_params), dtype)),
            self._own(segments.create((2, n_params), dtype)),
            self._own(segments.create((max_shards, n_params), dtype)),
        )
        self._arrays.params.array[step % 2] = params
        self._arrays.velocity.array[step % 2] = 0 if velocity is None else velocity
        self._acc = np.empty(n_params, dtype)
        self._scratch = np.empty(n_params, dtype)
        self._transport = self._make_transport()

    def _make_transport(self) -> Transport:
        if self.host.config.backend == "ray":
            from otpnn.training.ray_backend import RayTransport  # Ray only where it is used

            return RayTransport(self.host, self._arrays)
        return SharedMemoryTransport(self.host, self._arrays)

    def state(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        return self._arrays.params.array[step % 2], self._arrays.velocity.array[step % 2]

    def open_epoch(self, epoch: int) -> None:
        self._transport.open_epoch(epoch)

    # -- steps --------------------------------------------------------------------------------
    def run(self, first: int, last: int, epoch: int) -> None:
        """One step per round of messages; a fault planned meanwhile ends the stretch early
        (the coordinator then finds its stop point anew)."""
        version = self.host.planner.book.version
        for step in range(first, last + 1):
            self._step(step, epoch)
            if self.host.planner.book.version != version:
                break

    def _step(self, t: int, epoch: int) -> None:
        host, a = self.host, self._arrays
        offset, bounds = host.batches.shards(t)
        shards = tuple(Shard(i, offset + lo, offset + hi) for i, (lo, hi) in enumerate(bounds))
        results = self._compute(t, epoch, shards)
        grads = a.grads.array
        reduce_in_order([grads[s.index] for s in shards], self._acc)
        src, dst = (t - 1) % 2, t % 2
        sgd_update(
            host.lr_schedule.hyper(t),
            a.params.array[src],
            a.velocity.array[src],
            self._acc,
            bounds[-1][1],
            params_out=a.params.array[dst],
            velocity_out=a.velocity.array[dst],
            scratch=self._scratch,
        )
        losses, corrects = zip(*(results[s.index] for s in shards), strict=True)
        host.commit(t, losses, corrects)
        host.show_progress(t, epoch)

    def _compute(
        self, step: int, epoch: int, shards: tuple[Shard, ...]
    ) -> dict[int, tuple[float, int]]:
        """Get every shard computed once, whatever happens to the workers on the way."""
        host = self.host
        results: dict[int, tuple[float, int]] = {}
        pending = shards
        while pending:
            in_flight = self._dispatch(step, epoch, pending, host.await_workers())
            lost: list[Shard] = []
            deadline = time.monotonic() + host.step_timeout
            for index, worker, run, future in in_flight:
                try:
                    for r in self._transport.accept(await_reply(self.host, future, deadline)):
                        results[r.index] = (r.loss_sum, r.correct)
                except pykka.Timeout:
                    host.failure(step, index, worker, "hang", "no reply within the step deadline")
                    worker.kill()
                    lost.extend(run)
                except Exception as e:  # the worker crashed, exited, was killed: redo its run
                    host.failure(step, index, worker, loss_kind(e), describe(e))
                    lost.extend(run)
            if lost:
                host.lost_step(step)
            pending = tuple(lost)
        return results

    def _dispatch(
        self, step: int, epoch: int, shards: tuple[Shard, ...], workers: Workers
    ) -> list[tuple[int, ActorHandle, tuple[Shard, ...], pykka.Future[Any] | None]]:
        """Send each worker a contiguous run of ``shards``, as even as possible (idle ones get
        none), with the fault it acts out first, if any (fired on dispatch)."""
        planner = self.host.planner
        n = min(len(workers), len(shards))
        in_flight: list[tuple[int, ActorHandle, tuple[Shard, ...], pykka.Future[Any] | None]] = []
        for i in range(n):
            index, worker = workers[i]
            run = shards[slice(*split(len(shards), n, i))]
            span = range(run[0].index, run[-1].index + 1)
            planned = planner.for_worker(step, epoch, index, span, first=not in_flight)
            if planned is not None:
                planner.fire(planned)
                self.host.fault_fired(planned, step, index)
            action = None if planned is None else planned.action
            msg = self._transport.message(step, epoch, run, action)
            in_flight.append((index, worker, run, send(worker, msg)))
        return in_flight
