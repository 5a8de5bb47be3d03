"""The async driver: up to S updates' gradients computed at once, on parameters S updates old.

The algorithm and its arithmetic are :mod:`otpnn.async_sgd`'s (staleness ``S``: update t's
gradient is taken on version t-S, the parameters after update t-S; updates applied in order).
This module runs it on any worker kind:

- the driver keeps a ring of the last S+1 parameter versions (:class:`~otpnn.async_sgd.
  VersionRing`, in shared memory) and the momentum buffer; with updates up to t-1 applied,
  the work of updates t .. t+S-1 may be out at once (their versions exist), so a worker runs up
  to S updates ahead of the oldest unfinished one without waiting for the others;
- an update's micro-shards go out in ``min(shards, ceil(workers / S))`` contiguous runs (one
  message each, so that the S updates in flight give every worker work with as few messages
  as possible), each to the live worker with the least work queued (ties in turn); a worker
  computes each shard's summed gradient on its own, with the call sync SGD's workers make,
  into the shard's row of the update's gradient slot (``S`` slots, update t in slot t mod S);
- when every shard of update t is in, the driver adds the rows in shard order and applies the
  update into version t's row (``reduce_and_update``: sync SGD's bits), commits step t and
  sends out update t+S.

Recovery, and why it gives the same bits. A worker's messages are kept in a queue per worker
*incarnation* (its actor URN), in the order sent, which is the order it works through them;
each may take ``--step-timeout`` from when the worker could start it (its predecessor's reply,
or its sending). A worker that crashes, exits, is killed, or misses that deadline (then it is
killed) loses every message in its queue: their shards, of whichever updates, are sent again
to live workers, against the same versions (a version stays in the ring until the update
that read it is applied), into the same rows; nothing else changes, and a late reply of a
lost incarnation is never read (a killed thread worker, whose thread Python cannot stop,
computes no further shard). Updates are applied only in order and only whole, so the state
after each committed update is whole: the coordinator may stop, checkpoint and resume at any
step, and a snapshot holds the S-1 versions before it beside the parameters and momentum
(:meth:`AsyncStepwiseDriver.earlier`), which is all the next S updates read. A stretch's end (an
epoch, a checkpoint, a planned fault) drains the pipeline, and a stop leaves it after the
next update, abandoning the work in flight: which version a gradient reads never depends on
when it was computed, so neither changes a bit.

Faults: a worker's ``step=N`` fault fires with update N's work (``shard=N``: the run holding
the N-th micro-shard): that run goes to the worker named, which acts the fault out first (if
it is down then, at the first later update it is alive for). ``worker=any`` goes to the
worker of an update's first run. Coordinator, pool and loader faults stop a stretch before
their step, as in sync SGD.

How the versions reach a worker and the gradients come back is the :class:`UpdateTransport`'s
business: shared memory here, Ray's object store in :mod:`otpnn.training.ray_async` (one put
per version). Neither changes the arithmetic, so the bits are the same.
"""

from __future__ import annotations

import math
import time
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import numpy as np
import pykka

from otpnn.async_sgd import VersionRing, apply_update
from otpnn.model import num_params
from otpnn.schedule import shard_bounds
from otpnn.training import segments
from otpnn.training.drivers.base import (
    Driver,
    Host,
    Interrupted,
    Workers,
    await_reply,
    loss_kind,
    send,
)
from otpnn.training.drivers.stepwise import Shard, ShardResult, compute_shards
from otpnn.training.drivers.task import WorkerSide, WorkerTask
from otpnn.training.fault_planner import Planned, split
from supervision.reasons import describe
from supervision.refs import ActorHandle
from supervision.shm import ArrayDescriptor, SharedArray


@dataclass(frozen=True, slots=True)
class ComputeStale(WorkerTask):
    """Coordinator -> Worker: compute ``shards`` of update ``update`` on row ``version_row`` of
    ``ring`` (the version S updates old); shard k's summed gradient goes into row k of slot
    ``grad_slot`` of ``grads`` (S, shards, P). The reply: one :class:`ShardResult` per shard.
    ``fault``: an injected fault to act out first (see :mod:`otpnn.faults`)."""

    update: int
    epoch: int
    ring: ArrayDescriptor
    version_row: int
    grads: ArrayDescriptor
    grad_slot: int
    shards: tuple[Shard, ...]
    fault: str | None = None

    def perform(self, worker: WorkerSide) -> tuple[ShardResult, ...]:
        if self.fault is not None:
            worker.inject(self.fault)
        params = worker.attach("async.ring", self.ring)[self.version_row]
        grads = worker.attach("async.grads", self.grads)[self.grad_slot]
        return compute_shards(worker, self.epoch, self.shards, params, grads)


@dataclass(frozen=True)
class AsyncArrays:
    """The driver's shared arrays: the version ring (S+1, P) and the gradient slots (S, shards,
    P); the momentum buffer is the driver's alone."""

    ring: SharedArray
    grads: SharedArray
    staleness: int


class UpdateTransport(Protocol):
    """How the versions reach the workers and their gradients come back."""

    def open_epoch(self, epoch: int) -> None:
        """Epoch ``epoch``'s order has been drawn."""
        ...

    def publish(self, version: int) -> None:
        """``version``'s row of the ring is written: the next S updates may read it."""
        ...

    def message(self, update: int, epoch: int, shards: tuple[Shard, ...], fault: str | None) -> Any:
        """What a worker is sent to compute ``shards`` of ``update`` (on version update-S)."""
        ...

    def accept(self, update: int, reply: Any) -> tuple[ShardResult, ...]:
        """A worker's reply, once its gradients are in their rows of ``update``'s slot."""
        ...


class SharedMemoryUpdates:
    """Thread and process workers: descriptors in the message; the worker writes its rows."""

    def __init__(self, host: Host, arrays: AsyncArrays) -> None:
        self._arrays = arrays
        self._ring = VersionRing(arrays.ring.array, arrays.staleness)

    def open_epoch(self, epoch: int) -> None:
        pass  # the loader's permutation segment already holds it

    def publish(self, version: int) -> None:
        pass  # the workers read the ring's segment

    def message(
        self, update: int, epoch: int, shards: tuple[Shard, ...], fault: str | None
    ) -> ComputeStale:
        a = self._arrays
        return ComputeStale(
            update, epoch, a.ring.descriptor(), self._ring.slot(update - a.staleness),
            a.grads.descriptor(), update % a.staleness, shards, fault,
        )  # fmt: skip

    def accept(self, update: int, reply: Any) -> tuple[ShardResult, ...]:
        return tuple(reply)


@dataclass(eq=False)
class _Message:
    """A run of an update's shards sent to one worker incarnation."""

    update: int
    shards: tuple[Shard, ...]
    index: int
    worker: ActorHandle
    future: pykka.Future[Any] | None
    sent: float  # monotonic


@dataclass
class _Update:
    """An update in flight: its shards, the messages still out, the results in."""

    shards: tuple[Shard, ...]
    rows: int
    out: list[_Message] = field(default_factory=list)
    results: dict[int, tuple[float, int]] = field(default_factory=dict)


class AsyncStepwiseDriver(Driver):
    name = "async-stepwise"

    def __init__(self, host: Host) -> None:
        super().__init__(host)
        self.staleness = host.config.staleness
        self._earlier: np.ndarray | None = None  # a snapshot's, until start()
        self._updates: dict[int, _Update] = {}  # in flight, by update
        self._queues: dict[str, deque[_Message]] = {}  # by worker incarnation, in sent order
        self._ready: dict[str, float] = {}  # by incarnation: when its last reply was read
        self._turn = 0  # which worker a tie of queue lengths goes to

    @classmethod
    def unsupported(cls, backend: str) -> str | None:
        return None  # messages only: any worker kind (Ray through its transport)

    def restore_earlier(self, earlier: np.ndarray | None) -> None:
        self._earlier = earlier

    def start(self, step: int, params: np.ndarray, velocity: np.ndarray | None) -> None:
        cfg = self.host.config
        s, dtype, n_params = self.staleness, np.dtype(cfg.dtype), num_params(cfg.layer_sizes)
        max_shards = len(shard_bounds(cfg.batch_size, cfg.effective_shard_size))
        self._arrays = AsyncArrays(
            self._own(segments.create((s + 1, n_params), dtype)),
            self._own(segments.create((s, max_shards, n_params), dtype)),
            s,
        )
        self._ring = VersionRing(self._arrays.ring.array, s)
        self._ring.fill(step, params, self._earlier)
        self._earlier = None
        self._velocity = np.zeros(n_params, dtype) if velocity is None else velocity.copy()
        self._transport = self._make_transport()
        for version in range(max(0, step - s + 1), step + 1):
            self._transport.publish(version)

    def _make_transport(self) -> UpdateTransport:
        if self.host.config.backend == "ray":
            from otpnn.training.ray_async import RayUpdates  # Ray only where it is used

            return RayUpdates(self.host, self._arrays)
        return SharedMemoryUpdates(self.host, self._arrays)

    def state(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        return self._ring.version(step), self._velocity

    def earlier(self, step: int) -> np.ndarray | None:
        return self._ring.earlier(step)

    def open_epoch(self, epoch: int) -> None:
        self._transport.open_epoch(epoch)

    # -- updates ------------------------------------------------------------------------------
    def run(self, first: int, last: int, epoch: int) -> None:
        """Keep S updates in flight and apply them in order; a fault planned meanwhile stops
        the sending, and the stretch ends once those sent are applied (the coordinator then
        finds its stop point anew)."""
        book = self.host.planner.book
        version = book.version
        self._updates.clear()
        self._queues.clear()
        self._ready.clear()
        sent, limit = first - 1, last
        for t in range(first, last + 1):
            if t > limit:
                break
            while sent < min(limit, t - 1 + self.staleness):
                sent += 1
                self._send_update(sent, epoch)
            self._apply(t, epoch)
            if self.host.interrupted():  # a stop lands on the next update, not the stretch's end
                raise Interrupted
            if book.version != version:
                limit = sent

    def _send_update(self, update: int, epoch: int) -> None:
        offset, bounds = self.host.batches.shards(update)
        shards = tuple(Shard(i, offset + lo, offset + hi) for i, (lo, hi) in enumerate(bounds))
        self._updates[update] = _Update(shards, bounds[-1][1])
        self._send(update, epoch, shards)

    def _apply(self, t: int, epoch: int) -> None:
        """Wait for update ``t``'s shards (redoing what a lost worker held), then apply it."""
        host, upd = self.host, self._updates[t]
        while upd.out:
            self._receive(upd.out[0], epoch)
        slot = self._arrays.grads.array[t % self.staleness]
        grads = [slot[s.index] for s in upd.shards]
        hyper = host.lr_schedule.hyper(t)
        apply_update(hyper, self._ring, self._velocity, grads, t, upd.rows)
        del self._updates[t]
        self._transport.publish(t)
        losses, corrects = zip(*(upd.results[s.index] for s in upd.shards), strict=True)
        host.commit(t, losses, corrects)
        host.show_progress(t, epoch)

    def _receive(self, wanted: _Message, epoch: int) -> None:
        """Read ``wanted``'s worker's replies in the order it works, up to ``wanted``'s; a
        worker lost on the way has its whole queue sent again."""
        host, urn = self.host, wanted.worker.actor_urn
        queue = self._queues[urn]
        while wanted in queue:
            msg = queue[0]  # the worker could start it at the later of these
            deadline = max(self._ready.get(urn, 0.0), msg.sent) + host.step_timeout
            try:
                reply = await_reply(host, msg.future, deadline)
                results = self._transport.accept(msg.update, reply)
            except pykka.Timeout:
                host.failure(msg.update, msg.index, msg.worker, "hang", "no reply in time")
                msg.worker.kill()
                self._lose(msg.worker, epoch)
                return
            except Exception as e:  # crashed, exited, killed: its queue is sent again
                host.failure(msg.update, msg.index, msg.worker, loss_kind(e), describe(e))
                self._lose(msg.worker, epoch)
                return
            self._ready[urn] = time.monotonic()
            queue.popleft()
            upd = self._updates[msg.update]
            upd.out.remove(msg)
            for r in results:
                upd.results[r.index] = (r.loss_sum, r.correct)

    def _lose(self, worker: ActorHandle, epoch: int) -> None:
        """Send the shards of every message ``worker``'s incarnation held to live workers."""
        lost = self._queues.pop(worker.actor_urn)
        self._ready.pop(worker.actor_urn, None)
        for update in sorted({m.update for m in lost}):
            upd = self._updates[update]
            shards = [s for m in lost if m.update == update for s in m.shards]
            upd.out = [m for m in upd.out if m.worker is not worker]
            self.host.lost_step(update)
            self._send(update, epoch, tuple(sorted(shards, key=lambda s: s.index)))

    def _send(self, update: int, epoch: int, shards: tuple[Shard, ...]) -> None:
        """Send ``shards`` of ``update`` in contiguous runs (see the module), each with the
        fault its worker acts out first, if any (fired on sending)."""
        host, upd = self.host, self._updates[update]
        workers = host.await_workers()
        runs = min(len(shards), math.ceil(len(workers) / self.staleness))
        for i in range(runs):
            run = shards[slice(*split(len(shards), runs, i))]
            span = range(run[0].index, run[-1].index + 1)
            index, worker, planned = self._choose(update, epoch, span, workers, first=i == 0)
            if planned is not None:
                host.planner.fire(planned)
                host.fault_fired(planned, update, index)
            action = None if planned is None else planned.action
            msg = self._transport.message(update, epoch, run, action)
            sent = _Message(update, run, index, worker, send(worker, msg), time.monotonic())
            self._queues.setdefault(worker.actor_urn, deque()).append(sent)
            upd.out.append(sent)

    def _choose(
        self, update: int, epoch: int, span: range, workers: Workers, *, first: bool
    ) -> tuple[int, ActorHandle, Planned | None]:
        """The worker for a run of shards ``span`` of ``update``, and the fault it acts out:
        a worker that a planned fault names from this update on (so it fires where planned),
        else the least loaded (whose fault, if any, is ``worker=any`` or a chaos strike)."""
        planner = self.host.planner
        named = {f.worker for f in planner.book.unfired() if f.target == "worker"}
        for index, worker in workers:
            if index not in named:
                continue
            planned = planner.for_worker(update, epoch, index, span, first=first)
            if planned is not None and planned.fault is not None and planned.fault.worker == index:
                return index, worker, planned
        index, worker = self._least_loaded(workers)
        return index, worker, planner.for_worker(update, epoch, index, span, first=first)

    def _least_loaded(self, workers: Workers) -> tuple[int, ActorHandle]:
        """The live worker with the fewest messages queued; ties go round in turn."""
        self._turn += 1
        rotated = _rotate(workers, self._turn)
        return min(rotated, key=lambda w: len(self._queues.get(w[1].actor_urn, ())))


def _rotate(items: Workers, k: int) -> Iterator[tuple[int, ActorHandle]]:
    k %= len(items)
    yield from items[k:]
    yield from items[:k]
