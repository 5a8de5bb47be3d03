"""Async lockstep runs, the workers' side: each worker computes and applies whole updates itself.

Why: async SGD with staleness S lets the gradients of S updates be computed at once, but a
coordinator that applies every update and sends out the next one's work puts a message round
trip and a serial update between every gradient (:mod:`~otpnn.training.drivers.async_stepwise`).
Here, as in sync SGD's lockstep runs, one message per worker starts a *run* of updates and the
workers do the rest between them in shared memory; they wait for each other only where the
algorithm (:mod:`otpnn.async_sgd`) says a version must exist (the coordinator's side, which
starts and watches runs, is :mod:`otpnn.training.drivers.async_lockstep`):

the ranks take turns at the run's updates (rank r of R: ``first + r, first + r + R, ...``, but
see :meth:`~otpnn.training.fault_planner.FaultPlanner.plan_turns` for faults), as the message's
``owners`` says; for each update t it owns:

1. act out the faults planned at t; publish phase ``3t-2`` (ready);
2. wait until update ``t-S`` is applied (its owner's ``APPLIED`` cell reaches it; versions from
   before the run are there already); compute every micro-shard of t's batch on version
   ``t-S`` into the rank's own gradient rows and (loss, correct) into ``stats``; publish phase
   ``3t-1``;
3. wait until update ``t-1`` is applied; add the rows in shard order and update version
   ``t-1`` and momentum row ``(t-1) % 2`` into version t's ring row and momentum row
   ``t % 2`` (``reduce_and_update``: the bits of the serial reference's ``apply_update``);
   publish ``APPLIED`` = t, then phase ``3t``.

With R = S each rank computes its next gradient on the version it applied itself, and waits
only to apply, for the update just before its own: R workers overlap their gradients and
take turns at the (much shorter) updates. Who computes an update never changes its bits.

Recovery: updates are applied in order, each only after its predecessor, so the updates done
are ``c`` = the largest ``APPLIED`` of the run, and the state after c (versions ``c-S+1..c``
of the ring, momentum row ``c % 2``) is intact whatever dies, hangs or is stopped, and wherever:
the only writes after it are update c+1's, into version ``c-S``'s ring row (read by update
c's gradient only, which is done) and momentum row ``(c+1) % 2`` (momentum after c-1, read by
update c only). The coordinator aborts the run, keeps those c updates and starts a new run at
c+1 with the workers it has; it will redo update c+1 on the same inputs, so the same bits.

The phases let the coordinator find a hung rank: a rank acting out a hang has not published
its ready phase, while every other rank has moved past its own last one; the one furthest
behind is the hung one. Cells, tags, the abort check and waiting are lockstep's
(:class:`~otpnn.training.drivers.lockstep_rank.RankControl`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from otpnn.async_sgd import VersionRing, apply_update
from otpnn.lr_schedule import LrSchedule
from otpnn.model import layer_views, layers_gradient
from otpnn.schedule import Batches
from otpnn.training.drivers.lockstep_rank import PROGRESS, RankSide, RunAborted, tag
from otpnn.training.drivers.task import WorkerSide, WorkerTask
from supervision.shm import ArrayDescriptor

APPLIED = 2  # cell of control row 1 + rank: the last update this rank applied in the run


@dataclass(frozen=True, slots=True)
class AsyncSegments:
    """The coordinator's shared arrays, named for the workers.

    ring: (S + 1, P), version v in row v mod (S + 1) (:class:`~otpnn.async_sgd.VersionRing`);
    velocity: (2, P), momentum after update t in row t % 2; stats: (steps_per_epoch,
    max_shards, 2) float64 (loss sum, correct) by update of the epoch; control: lockstep's.
    """

    ring: ArrayDescriptor
    velocity: ArrayDescriptor
    stats: ArrayDescriptor
    control: ArrayDescriptor


@dataclass(frozen=True, slots=True)
class RunUpdates(WorkerTask):
    """Coordinator -> Worker: be rank ``rank`` of ``ranks`` for updates ``first..last`` (one
    epoch, ``epoch``) of run ``run`` with staleness ``staleness``, computing and applying those
    whose ``owners`` entry (the rank of each update of the run) is ``rank``; act out ``faults``
    ((update, action) pairs) at the start of those updates. The reply is the last update of the
    run, or None if the run was aborted."""

    run: int
    rank: int
    ranks: int
    first: int
    last: int
    owners: tuple[int, ...]
    epoch: int
    staleness: int
    segments: AsyncSegments
    batches: Batches
    lr_schedule: LrSchedule
    max_shards: int
    faults: tuple[tuple[int, str], ...] = ()

    def perform(self, worker: WorkerSide) -> int | None:
        seg = self.segments
        arrays = AsyncRankArrays(
            worker.attach("async.ring", seg.ring),
            worker.attach("async.velocity", seg.velocity),
            worker.attach("async.stats", seg.stats),
            worker.attach("control", seg.control),
        )
        return AsyncRank(self, RankSide.of(worker, self.epoch, seg.control), arrays).run()


@dataclass
class AsyncRankArrays:
    """A worker's views of the coordinator's segments for one run."""

    ring: np.ndarray
    velocity: np.ndarray
    stats: np.ndarray
    control: np.ndarray


class AsyncRank:
    """One worker's part in a run: the loop of updates above, for rank ``msg.rank``."""

    def __init__(self, msg: RunUpdates, side: RankSide, arrays: AsyncRankArrays) -> None:
        self.msg, self.side, self.a = msg, side, arrays
        self._ctl = side.control(arrays.control, msg.run, msg.rank)
        self._applied = arrays.control[1 : 1 + msg.ranks, APPLIED]
        self._ring = VersionRing(arrays.ring, msg.staleness)
        self._versions = [layer_views(row, side.sizes) for row in arrays.ring]
        n_params, dtype = arrays.ring.shape[1], arrays.ring.dtype
        self._grads = np.empty((msg.max_shards, n_params), dtype)  # this rank's alone
        self._grad_layers = [layer_views(row, side.sizes) for row in self._grads]

    def run(self) -> int | None:
        msg, ctl = self.msg, self._ctl
        faults = dict(msg.faults)
        try:
            for t in range(msg.first, msg.last + 1):
                if msg.owners[t - msg.first] != msg.rank:
                    continue
                if t in faults:
                    ctl.mark_fault(t)
                    self.side.act_out(faults[t])
                ctl.publish(PROGRESS, 3 * t - 2)
                self._await_applied(t - msg.staleness)
                offset, bounds = msg.batches.shards(t)
                self._gradients(t, offset, bounds)
                ctl.publish(PROGRESS, 3 * t - 1)
                self._await_applied(t - 1)
                self._apply(t, bounds)
                ctl.publish(APPLIED, t)
                ctl.publish(PROGRESS, 3 * t)
        except RunAborted:
            return None
        return msg.last

    def _await_applied(self, update: int) -> None:
        """Until ``update`` is applied (at once for one applied before the run)."""
        if update < self.msg.first:
            return
        applied, owner = self._applied, self.msg.owners[update - self.msg.first]
        need = tag(self.msg.run, update)
        self._ctl.wait_until(lambda: bool(applied[owner] >= need))

    def _gradients(self, t: int, offset: int, bounds: list[tuple[int, int]]) -> None:
        side = self.side
        version = self._versions[self._ring.slot(t - self.msg.staleness)]
        k = (t - 1) % self.msg.batches.steps_per_epoch
        for s, (lo, hi) in enumerate(bounds):
            self._ctl.check()
            rows = side.order[offset + lo : offset + hi]
            loss, correct = layers_gradient(
                version, self._grad_layers[s], side.activation, side.images[rows],
                side.labels[rows],
            )  # fmt: skip
            self.a.stats[k, s] = (loss, correct)

    def _apply(self, t: int, bounds: list[tuple[int, int]]) -> None:
        a = self.a
        self._ctl.check()
        apply_update(
            self.msg.lr_schedule.hyper(t), self._ring, a.velocity[(t - 1) % 2],
            self._grads[: len(bounds)], t, bounds[-1][1],
            velocity_out=a.velocity[t % 2],
        )  # fmt: skip


def completed_updates(control: np.ndarray, run: int, ranks: int, before_first: int) -> int:
    """Updates applied in ``run`` and before it: the last update whose state is whole."""
    applied = [int(c) for c in control[1 : 1 + ranks, APPLIED] if int(c) >> 32 == run]
    return max((c & 0xFFFFFFFF for c in applied), default=before_first)


def begun_update(control: np.ndarray, run: int, rank: int) -> int:
    """The last update rank ``rank`` of ``run`` was ready for (0 if none)."""
    cell = int(control[1 + rank, PROGRESS])
    return ((cell & 0xFFFFFFFF) + 2) // 3 if cell >> 32 == run else 0
