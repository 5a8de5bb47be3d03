"""The async lockstep driver: async SGD's updates computed and applied by the workers themselves.

Thread and process workers on x86-64, like sync SGD's lockstep driver, whose run-watching it
inherits unchanged (a dead, hung or stopped worker aborts the run; the next run starts after
the last update applied, with the workers alive). What differs is what a run does, which is
the workers' business (:mod:`otpnn.training.drivers.async_lockstep_rank`): rank r applies
every R-th update, each computed on the version S updates old and applied in order, so the
state lives in a ring of S + 1 parameter versions and two momentum rows instead of sync's
double buffer, and every update's bits are the serial reference's
(:func:`otpnn.reference_async.train_async_reference`) whoever computed it.

Faults: the ranks take turns at the updates of a run, and a worker that a fault names takes
the turn where it is due (:meth:`~otpnn.training.fault_planner.FaultPlanner.plan_turns`), so a
``step=N`` fault fires at update N as in the other protocols; ``worker=any`` goes to update N's
owner, and chaos draws for the owner of each update.
"""

from __future__ import annotations

import numpy as np

from otpnn.async_sgd import VersionRing
from otpnn.model import num_params
from otpnn.schedule import shard_bounds
from otpnn.training import segments
from otpnn.training.drivers import async_lockstep_rank as ranks
from otpnn.training.drivers import lockstep_rank
from otpnn.training.drivers.async_lockstep_rank import AsyncSegments, RunUpdates
from otpnn.training.drivers.base import Host
from otpnn.training.drivers.lockstep import LockstepDriver, _Run
from otpnn.training.drivers.task import WorkerTask
from otpnn.training.fault_planner import Planned


class AsyncLockstepDriver(LockstepDriver):
    name = "async-lockstep"

    def __init__(self, host: Host) -> None:
        super().__init__(host)
        self._earlier: np.ndarray | None = None  # a snapshot's, until start()

    def restore_earlier(self, earlier: np.ndarray | None) -> None:
        self._earlier = earlier

    def start(self, step: int, params: np.ndarray, velocity: np.ndarray | None) -> None:
        cfg = self.host.config
        s, dtype, n_params = cfg.staleness, np.dtype(cfg.dtype), num_params(cfg.layer_sizes)
        self._max_shards = len(shard_bounds(cfg.batch_size, cfg.effective_shard_size))
        per_epoch = self.host.batches.steps_per_epoch
        self._control = self._own(  # first: close() needs it once anything is owned
            segments.create(lockstep_rank.control_shape(cfg.workers or 1), np.int64)
        )
        self._ring_segment = self._own(segments.create((s + 1, n_params), dtype))
        self._velocity = self._own(segments.create((2, n_params), dtype))
        self._stats = self._own(segments.create((per_epoch, self._max_shards, 2), np.float64))
        self._ring = VersionRing(self._ring_segment.array, s)
        self._ring.fill(step, params, self._earlier)
        self._earlier = None
        self._velocity.array[step % 2] = 0 if velocity is None else velocity

    def state(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        return self._ring.version(step), self._velocity.array[step % 2]

    def earlier(self, step: int) -> np.ndarray | None:
        return self._ring.earlier(step)

    def _plan(self, first: int, last: int, epoch: int, indices: list[int]) -> list[list[Planned]]:
        owners, plans = self.host.planner.plan_turns(first, last, epoch, indices)
        self._owners = tuple(owners)  # one tuple for every rank's message
        return plans

    def _message(
        self, rank: int, n_ranks: int, first: int, last: int, epoch: int,
        faults: tuple[tuple[int, str], ...],
    ) -> WorkerTask:  # fmt: skip
        host = self.host
        segments = AsyncSegments(
            self._ring_segment.descriptor(),
            self._velocity.descriptor(),
            self._stats.descriptor(),
            self._control.descriptor(),
        )
        return RunUpdates(
            self._run_id, rank, n_ranks, first, last, self._owners, epoch, host.config.staleness,
            segments, host.batches, host.lr_schedule, self._max_shards, faults,
        )  # fmt: skip

    def _completed(self, run: _Run, before_first: int) -> int:
        return ranks.completed_updates(self._control.array, run.id, len(run.workers), before_first)

    def _lost_steps(self, run: _Run, done: int) -> range:
        """The updates after ``done`` that ranks had begun (a fault acted out counts)."""
        control, n = self._control.array, len(run.workers)
        begun = [lockstep_rank.fault_reached(control, run.id, r) for r in range(n)]
        begun += [ranks.begun_update(control, run.id, r) for r in range(n)]
        return range(done + 1, max(done + 1, *begun) + 1)
