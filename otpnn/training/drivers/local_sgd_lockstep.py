"""The local SGD lockstep driver: the workers train the rounds and average them themselves.

Thread and process workers on x86-64, like sync SGD's lockstep driver, whose run-watching it
inherits unchanged (a dead, hung or stopped worker aborts the run; the next run starts after
the last round every worker averaged, with the workers alive). What differs is what a run does,
which is the workers' business (:mod:`otpnn.training.drivers.local_sgd_lockstep_rank`): rank r
trains shares r, r + R, ... of each round on replicas in shared memory, and the ranks average
slices of them into the global state, kept in two rows by round parity. The arithmetic is
:mod:`otpnn.local_sgd`'s, so the bits are the serial reference's for the same worker count.

Warm-up steps (synchronous) run through an inner sync lockstep driver. The state is whole only
at averaging boundaries (:meth:`LocalSGDLockstepDriver.boundary`). Faults: as with the stepwise
local SGD driver, a worker's ``step=N`` fault fires before the first share given to that worker
that reaches step N (``worker=any``: the round's first share's rank).
"""

from __future__ import annotations

import numpy as np

from otpnn.local_sgd import Round, RoundSchedule
from otpnn.model import num_params
from otpnn.schedule import shard_bounds
from otpnn.training import segments
from otpnn.training.drivers import local_sgd_lockstep_rank as ranks
from otpnn.training.drivers import lockstep_rank
from otpnn.training.drivers.base import Host
from otpnn.training.drivers.local_sgd_lockstep_rank import RoundSegments, RunRounds
from otpnn.training.drivers.lockstep import LockstepDriver, _Run
from otpnn.training.drivers.task import WorkerTask
from otpnn.training.fault_planner import Planned


class LocalSGDLockstepDriver(LockstepDriver):
    name = "local-sgd-lockstep"

    def __init__(self, host: Host) -> None:
        super().__init__(host)
        self.schedule = RoundSchedule.of(host.config, host.batches.steps_per_epoch)
        self._warmup: LockstepDriver | None = None  # while warm-up steps remain
        self._row = 0  # the row of the global state that holds the state after the last round
        self._rounds: list[Round] = []  # the current run's

    def boundary(self, step: int) -> int:
        return self.schedule.last_of_round(step)

    def start(self, step: int, params: np.ndarray, velocity: np.ndarray | None) -> None:
        cfg = self.host.config
        n_params, dtype = num_params(cfg.layer_sizes), np.dtype(cfg.dtype)
        max_shards = len(shard_bounds(cfg.batch_size, cfg.effective_shard_size))
        per_epoch = self.host.batches.steps_per_epoch
        self._control = self._own(  # first: close() needs it once anything is owned
            segments.create(lockstep_rank.control_shape(cfg.workers or 1), np.int64)
        )
        self._state = self._own(segments.create((2, 2, n_params), dtype))
        self._replicas = self._own(segments.create((self.schedule.workers, 2, n_params), dtype))
        self._stats = self._own(segments.create((per_epoch, max_shards, 2), np.float64))
        self._row = 0
        self._state.array[0, 0] = params
        self._state.array[0, 1] = 0 if velocity is None else velocity
        if step < self.schedule.warmup_steps:
            self._warmup = LockstepDriver(self.host)
            self._warmup.start(step, params, velocity)

    def state(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        if self._warmup is not None:
            return self._warmup.state(step)
        return self._state.array[self._row, 0], self._state.array[self._row, 1]

    def close(self) -> None:
        if self._warmup is not None:
            self._warmup.close()
        super().close()

    def run(self, first: int, last: int, epoch: int) -> None:
        """Warm-up steps through the inner synchronous driver, then a run of rounds."""
        warmup = self._warmup
        if warmup is not None:
            if first <= self.schedule.warmup_steps:  # steps are boundaries: come back after
                warmup.run(first, min(last, self.schedule.warmup_steps), epoch)
                return
            params, velocity = warmup.state(first - 1)  # warm-up done: the global state
            self._state.array[self._row, 0], self._state.array[self._row, 1] = params, velocity
            warmup.close()
            self._warmup = None
        self._rounds = list(self.schedule.rounds(first, last))
        super().run(first, last, epoch)

    def _plan(self, first: int, last: int, epoch: int, indices: list[int]) -> list[list[Planned]]:
        """Per rank, the first fault its worker meets along each share it trains."""
        planner = self.host.planner
        plans: list[list[Planned]] = [[] for _ in indices]
        taken: set[int] = set()
        for rnd in self._rounds:
            for s, share in enumerate(rnd.shares):
                rank = s % len(indices)
                found = planner.for_share(share, epoch, indices[rank], first=s == 0, taken=taken)
                if found is not None:
                    if found.fault_id is not None:
                        taken.add(found.fault_id)
                    plans[rank].append(found)
        return plans

    def _message(
        self, rank: int, n_ranks: int, first: int, last: int, epoch: int,
        faults: tuple[tuple[int, str], ...],
    ) -> WorkerTask:  # fmt: skip
        host = self.host
        segments = RoundSegments(
            self._state.descriptor(),
            self._replicas.descriptor(),
            self._stats.descriptor(),
            self._control.descriptor(),
        )
        return RunRounds(
            self._run_id, rank, n_ranks, first, last, epoch, self._row, self.schedule, segments,
            host.batches, host.lr_schedule, faults,
        )  # fmt: skip

    def _completed(self, run: _Run, before_first: int) -> int:
        done = ranks.completed_rounds(self._control.array, run.id, len(run.workers))
        return self._rounds[done - 1].last if done else before_first

    def _ended(self, run: _Run, done: int) -> None:
        rounds = ranks.completed_rounds(self._control.array, run.id, len(run.workers))
        self._row = (self._row + rounds) % 2

    def _lost_steps(self, run: _Run, done: int) -> range:
        """The steps of the round after ``done``: every share of it is trained again."""
        return range(done + 1, self.schedule.last_of_round(done + 1) + 1)
