"""The lockstep driver: one message per worker starts a run of steps; the coordinator watches.

Thread and process workers on x86-64 (see :data:`lockstep_rank.SUPPORTED`). The workers
compute, reduce and update between them behind a barrier in shared memory (the workers' side:
:mod:`otpnn.training.drivers.lockstep_rank`); the driver only watches the run, for:

- a dead worker (its reply fails): the run is aborted;
- a hung one (no progress within the step deadline): the ranks furthest behind are killed and
  the run aborted;
- a stop request: the run is aborted and the driver leaves (with a short grace for the ranks);
- a fault planned while the run goes on: the run is aborted, so the next one plans it.

An aborted run keeps the steps every rank finished (their state is whole, see the rank
module's recovery rule) and the next run starts from there with whichever workers are alive.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pykka

from otpnn.model import num_params
from otpnn.schedule import shard_bounds
from otpnn.training import segments
from otpnn.training.drivers import lockstep_rank as ranks
from otpnn.training.drivers.base import (
    Driver,
    Host,
    Interrupted,
    Workers,
    loss_kind,
    reply,
    send,
)
from otpnn.training.drivers.lockstep_rank import LockstepSegments, RunSteps
from otpnn.training.drivers.task import WorkerTask
from otpnn.training.fault_planner import Planned
from supervision.reasons import describe
from supervision.refs import ActorHandle

POLL = 0.02  # seconds between looks at a run's workers, progress and stop requests
STOP_GRACE = 0.5  # how long a stopping coordinator waits for its workers to leave a run


@dataclass(frozen=True)
class Lost:
    """A worker that failed a run: ``kind`` crash or hang, and why."""

    index: int
    worker: ActorHandle
    kind: str
    reason: str


@dataclass
class _Run:
    """One run as the watch loop sees it."""

    id: int
    first: int
    epoch: int
    workers: Workers
    plans: list[list[Planned]]
    pending: dict[int, tuple[int, ActorHandle, pykka.Future[Any] | None]]  # by rank
    lost: list[Lost] = field(default_factory=list)
    interrupted: bool = False
    abort_deadline: float | None = None


class LockstepDriver(Driver):
    name = "lockstep"

    def __init__(self, host: Host) -> None:
        super().__init__(host)
        self._run_id = 0  # runs are numbered in the control segment's cells

    @classmethod
    def unsupported(cls, backend: str) -> str | None:
        if backend not in ("thread", "process"):
            return f"the lockstep protocol needs shared memory, which {backend} workers lack"
        if not ranks.SUPPORTED:
            return "the lockstep barrier needs x86-64's store order (this machine: use stepwise)"
        return None

    def start(self, step: int, params: np.ndarray, velocity: np.ndarray | None) -> None:
        cfg = self.host.config
        dtype = np.dtype(cfg.dtype)
        n_params = num_params(cfg.layer_sizes)
        max_shards = len(shard_bounds(cfg.batch_size, cfg.effective_shard_size))
        per_epoch = self.host.batches.steps_per_epoch
        self._control = self._own(  # first: close() needs it once anything is owned
            segments.create(ranks.control_shape(cfg.workers or 1), np.int64)
        )
        self._params = self._own(segments.create((2, n_params), dtype))
        self._velocity = self._own(segments.create((2, n_params), dtype))
        self._grads = self._own(segments.create((max_shards, n_params), dtype))
        self._stats = self._own(segments.create((per_epoch, max_shards, 2), np.float64))
        self._params.array[step % 2] = params
        self._velocity.array[step % 2] = 0 if velocity is None else velocity

    def state(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        return self._params.array[step % 2], self._velocity.array[step % 2]

    def close(self) -> None:
        if self._segments:  # a run may be going on without us: its workers must leave it
            self._control.array[0, ranks.ABORT] = self._run_id
        super().close()

    # -- a run --------------------------------------------------------------------------------
    def run(self, first: int, last: int, epoch: int) -> None:
        """One run of steps first..last; an aborted one keeps the steps every worker finished
        (the next run starts from there with the workers alive then)."""
        host, control = self.host, self._control.array
        workers = list(host.await_workers())
        self._run_id += 1
        control[0, ranks.RUN] = self._run_id
        indices = [index for index, _ in workers]
        plans = self._plan(first, last, epoch, indices)
        pending: dict[int, tuple[int, ActorHandle, pykka.Future[Any] | None]] = {}
        for rank, (index, worker) in enumerate(workers):
            faults = tuple((p.step, p.action) for p in plans[rank])
            msg = self._message(rank, len(workers), first, last, epoch, faults)
            pending[rank] = (index, worker, send(worker, msg))
        run = _Run(self._run_id, first, epoch, workers, plans, pending)
        self._watch(run)
        done = self._completed(run, first - 1)
        self._ended(run, done)
        self._fired(run)
        for lost in run.lost:
            host.failure(done + 1, lost.index, lost.worker, lost.kind, lost.reason)
        self._commit(first, done)
        if run.lost:
            for step in self._lost_steps(run, done):
                host.lost_step(step)
        if run.interrupted:
            raise Interrupted

    def _commit(self, first: int, done: int) -> None:
        """Commit steps first..done (of one epoch) from the stats the ranks wrote. Every worker
        waits while this runs, so the run's rows leave shared memory in one call, as Python
        floats, rather than by numpy indexing per step."""
        batches = self.host.batches
        k = (first - 1) % batches.steps_per_epoch
        rows = self._stats.array[k : k + max(0, done - first + 1)].tolist()
        for step, shards in zip(range(first, done + 1), rows, strict=True):
            n = batches.shard_count(step)
            self.host.commit(step, [s[0] for s in shards[:n]], [s[1] for s in shards[:n]])

    def _watch(self, run: _Run) -> None:
        """Wait for a run's replies. A failed reply, a stop request or a newly planned fault
        aborts the run; a run without progress for the step deadline has its laggards killed.
        Fills in ``run.lost`` and ``run.interrupted``."""
        host, control = self.host, self._control.array
        progress = control[1 : 1 + len(run.workers), ranks.PROGRESS]
        plan = host.planner.book.version
        seen, moved_at, shown = progress.sum(), time.monotonic(), run.first - 1
        while run.pending:
            self._collect_replies(run)
            if not run.pending:
                break
            now = time.monotonic()
            if (moved := progress.sum()) != seen:  # steps done, then faults reached: in order
                seen, moved_at = moved, now
                live = self._completed(run, run.first - 1)
                if live > shown:
                    shown = live
                    host.show_progress(live, run.epoch)
            self._fired(run)
            if run.abort_deadline is not None:
                if now > run.abort_deadline:
                    if not run.interrupted:
                        for index, worker, _ in run.pending.values():
                            reason = "did not leave an aborted run"
                            run.lost.append(Lost(index, worker, "hang", reason))
                            worker.kill()
                    break
            elif now - moved_at > host.step_timeout:
                self._kill_laggards(run, progress)
            if host.interrupted():
                run.interrupted = True
                self._abort(run, STOP_GRACE)
            elif host.planner.book.version != plan:
                self._abort(run, host.step_timeout)  # replan with the new fault

    def _collect_replies(self, run: _Run) -> None:
        """Block on one reply for a while, look at the others; a failed one aborts the run."""
        first = next(iter(run.pending))
        for rank, (index, worker, future) in list(run.pending.items()):
            try:
                reply(future, POLL if rank == first else 0)
            except pykka.Timeout:
                continue
            except Exception as e:  # the worker crashed, exited, was killed
                run.lost.append(Lost(index, worker, loss_kind(e), describe(e)))
                self._abort(run, self.host.step_timeout)
            del run.pending[rank]

    def _kill_laggards(self, run: _Run, progress: np.ndarray) -> None:
        behind = min(int(progress[r]) for r in run.pending)
        for rank in [r for r in run.pending if int(progress[r]) == behind]:
            index, worker, _ = run.pending.pop(rank)
            run.lost.append(Lost(index, worker, "hang", "no progress within the step deadline"))
            worker.kill()
        self._abort(run, self.host.step_timeout)

    def _abort(self, run: _Run, grace: float) -> None:
        if run.abort_deadline is None:
            self._control.array[0, ranks.ABORT] = run.id
            run.abort_deadline = time.monotonic() + grace

    def _fired(self, run: _Run) -> None:
        """Mark and record the planned faults the ranks got to, as they get there (the others
        are planned again in the next run)."""
        control = self._control.array
        reached = [ranks.fault_reached(control, run.id, r) for r in range(len(run.workers))]
        indices = [index for index, _ in run.workers]
        for fired in self.host.planner.reached(run.plans, indices, reached):
            self.host.fault_fired(fired.planned, fired.planned.step, fired.index)

    # -- what a protocol of this family says for itself ----------------------------------------
    def _plan(self, first: int, last: int, epoch: int, indices: list[int]) -> list[list[Planned]]:
        """Per rank, the faults it acts out in the run (each rank computes a share of every
        step here)."""
        return self.host.planner.plan_run(first, last, epoch, indices)

    def _message(
        self, rank: int, n_ranks: int, first: int, last: int, epoch: int,
        faults: tuple[tuple[int, str], ...],
    ) -> WorkerTask:  # fmt: skip
        """What starts rank ``rank`` of ``n_ranks`` on the run."""
        segments = LockstepSegments(
            self._params.descriptor(),
            self._velocity.descriptor(),
            self._grads.descriptor(),
            self._stats.descriptor(),
            self._control.descriptor(),
        )
        host = self.host
        return RunSteps(
            self._run_id, rank, n_ranks, first, last, epoch, segments, host.batches,
            host.lr_schedule, faults,
        )  # fmt: skip

    def _completed(self, run: _Run, before_first: int) -> int:
        """The last step whose state is whole, as the run's control cells say."""
        return ranks.completed_steps(self._control.array, run.id, len(run.workers), before_first)

    def _ended(self, run: _Run, done: int) -> None:
        """The run is over, with the state whole after step ``done`` (before it is committed)."""

    def _lost_steps(self, run: _Run, done: int) -> range:
        """The steps whose work a lost worker cost, to be redone (chaos draws again for them):
        here the one every rank was at."""
        return range(done + 1, done + 2)
