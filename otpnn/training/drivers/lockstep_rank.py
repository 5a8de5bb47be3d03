"""Lockstep runs, the workers' side: the workers run the optimisation steps themselves.

Why: a step of this network is one or two milliseconds of maths, and a coordinator that sends a
message per worker per step, waits for the replies, then reduces and updates alone keeps the
workers idle for much of every step. Here one message per worker starts a *run* of steps (up
to an epoch), and the workers do the whole step between them (the coordinator's side, which
starts and watches runs, is :mod:`otpnn.training.drivers.lockstep`):

for each step t of the run, rank r of R:

1. compute rank r's contiguous share of the step's micro-shards against ``params[(t-1) % 2]``,
   writing each shard's summed gradient into its row of ``grads`` and (loss, correct) into
   ``stats``; publish phase ``2t-1``; wait until every rank has published it;
2. reduce rank r's slice of the parameter vector over all gradient rows in shard order and
   update that slice of (params, velocity) from row ``(t-1) % 2`` into row ``t % 2``; publish
   phase ``2t``; wait until every rank has (not after the run's last step).

The reduction and the update are element-wise per parameter, so slices (and the blocks of
``reduce_and_update``'s compiled pass) give the bits of the whole-vector ``reduce_in_order`` +
``sgd_update`` that the serial reference does.

Recovery: the state after s steps lives in row ``s % 2`` and is not written again before every
rank has finished step s+1 (the next writes to that row come in step s+2, behind the barrier of
phase ``2s+3``). So whatever dies, hangs or is stopped, and wherever, the state after
``c = min over ranks of phase // 2`` completed steps is intact: the coordinator aborts the run,
keeps those c steps and starts a new run at c+1 with the workers it has.

The barrier: each rank writes only its own progress cell (one aligned int64 store, tagged with
the run id so cells left over from an earlier run never count) and reads the others'. That
needs stores to become visible in program order, which x86-64 (TSO) guarantees; elsewhere the
trainer uses the per-step protocol (see :data:`SUPPORTED`). Process ranks wait by spinning
briefly, then yielding, then sleeping: a rank waiting on a slow or hung peer does not burn a
core for long. Thread ranks share one interpreter lock, and a spinning thread starves the thread
it waits for of it; they wait on a condition that publishing notifies instead.
"""

from __future__ import annotations

import os
import platform
import threading
import time
import weakref
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from otpnn.lr_schedule import LrSchedule
from otpnn.model import layer_views, layers_gradient, reduce_and_update
from otpnn.schedule import Batches
from otpnn.training.drivers.task import WorkerSide, WorkerTask
from otpnn.training.fault_planner import split
from supervision.shm import ArrayDescriptor

# Store order visible to other cores in program order (TSO): what the barrier relies on.
SUPPORTED = platform.machine().lower() in ("x86_64", "amd64")

RUN, ABORT = 0, 1  # cells of control row 0: the current run id; the id of an aborted run
PROGRESS, FAULT = 0, 1  # cells of control row 1 + rank: its progress; the last fault acted out
_CELLS = 8  # int64 cells per control row: one 64-byte cache line per rank

SPIN_SECONDS = 50e-6  # a waiting process rank spins this long before yielding the core, ...
YIELD_SECONDS = 2e-3  # ... yields it this long, then sleeps this long between looks:
SLEEP_SECONDS = 200e-6
THREAD_WAIT_SECONDS = 5e-3  # a waiting thread rank looks for an abort at least this often

# Thread ranks of one job (same control segment) wake each other through one condition.
_conditions: weakref.WeakValueDictionary[str, threading.Condition] = weakref.WeakValueDictionary()
_conditions_lock = threading.Lock()


def _condition(key: str) -> threading.Condition:
    with _conditions_lock:
        cond = _conditions.get(key)
        if cond is None:
            cond = _conditions[key] = threading.Condition()
        return cond


class RunAborted(Exception):
    """The coordinator aborted this run (or the worker was killed): stop writing, return."""


def tag(run: int, value: int) -> int:
    """A control cell's value: the run id in the high half, so later runs compare greater."""
    return (run << 32) | value


def control_shape(max_ranks: int) -> tuple[int, int]:
    return (1 + max_ranks, _CELLS)


@dataclass(frozen=True, slots=True)
class LockstepSegments:
    """The coordinator's shared arrays, named for the workers.

    params, velocity: (2, P) double-buffered by step parity; grads: (max_shards, P);
    stats: (steps_per_epoch, max_shards, 2) float64 (loss sum, correct) by step of the epoch;
    control: int64 (1 + max_ranks, 8), see the cells above.
    """

    params: ArrayDescriptor
    velocity: ArrayDescriptor
    grads: ArrayDescriptor
    stats: ArrayDescriptor
    control: ArrayDescriptor


@dataclass(frozen=True, slots=True)
class RunSteps(WorkerTask):
    """Coordinator -> Worker: be rank ``rank`` of ``ranks`` for steps ``first..last`` (one
    epoch, ``epoch``) of run ``run``; act out ``faults`` ((step, action) pairs) at the start of
    those steps. The reply is the last step this rank finished, or None if the run was aborted.
    """

    run: int
    rank: int
    ranks: int
    first: int
    last: int
    epoch: int
    segments: LockstepSegments
    batches: Batches
    lr_schedule: LrSchedule
    faults: tuple[tuple[int, str], ...] = ()

    def perform(self, worker: WorkerSide) -> int | None:
        """Be this rank of the run; the last step done, or None if the run was aborted."""
        seg = self.segments
        arrays = RankArrays(
            worker.attach("params", seg.params),
            worker.attach("velocity", seg.velocity),
            worker.attach("grads", seg.grads),
            worker.attach("stats", seg.stats),
            worker.attach("control", seg.control),
        )
        return Rank(self, RankSide.of(worker, self.epoch, seg.control), arrays).run()


@dataclass
class RankArrays:
    """A worker's views of the coordinator's segments for one run."""

    params: np.ndarray
    velocity: np.ndarray
    grads: np.ndarray
    stats: np.ndarray
    control: np.ndarray


@dataclass(frozen=True)
class RankSide:
    """What a rank of any lockstep protocol takes from its worker for a run: the data and the
    epoch's order, the network, how to act out a fault, the flag set once the worker is killed,
    and ``threads_key``: set when the ranks are threads of one process (any string the ranks of
    a run share, e.g. the control segment's name), which wait for each other differently."""

    images: np.ndarray
    labels: np.ndarray
    order: np.ndarray  # the epoch's permutation
    sizes: tuple[int, ...]
    activation: str
    act_out: Callable[[str], None]
    killed: threading.Event
    threads_key: str | None = None

    @classmethod
    def of(cls, worker: WorkerSide, epoch: int, control: ArrayDescriptor) -> RankSide:
        threads_key = None if worker.own_process else control.name
        return cls(
            worker.images, worker.labels, worker.order(epoch), worker.sizes, worker.activation,
            worker.inject, worker.killed, threads_key,
        )  # fmt: skip

    def control(self, control: np.ndarray, run: int, rank: int) -> RankControl:
        """This rank's :class:`RankControl` of ``run``."""
        return RankControl(control, run, rank, self.killed, self.threads_key)


class RankControl:
    """A rank's side of a run's control cells: its own cells, the abort check, and waiting for
    the other ranks (the barrier described in the module, which the async protocol shares)."""

    def __init__(
        self,
        control: np.ndarray,
        run: int,
        rank: int,
        killed: threading.Event,
        threads_key: str | None,
    ) -> None:
        """``threads_key``: set when the ranks are threads of one process (any string the
        ranks of a run share, e.g. the control segment's name); None for process ranks."""
        self.control, self.run = control, run
        self._cell = control[1 + rank]
        self._killed = killed
        self._cond = _condition(threads_key) if threads_key is not None else None

    def publish(self, cell: int, value: int) -> None:
        """Set this rank's ``cell`` to ``value`` of this run, and wake waiting thread ranks."""
        self.check()
        self._cell[cell] = tag(self.run, value)
        if self._cond is not None:
            with self._cond:
                self._cond.notify_all()

    def mark_fault(self, step: int) -> None:
        """This rank acts out its fault planned at ``step`` now. Not checked against an abort:
        a rank that reached its fault acts it out, so that which faults fire does not depend
        on how soon an abort reaches it."""
        self._cell[FAULT] = tag(self.run, step)

    def check(self) -> None:
        """Before any write: is this run still current, and this worker still alive? (A killed
        thread worker's thread runs on until it returns; it must not write any more.)"""
        control = self.control
        if self._killed.is_set() or control[0, RUN] != self.run:
            raise RunAborted
        if control[0, ABORT] == self.run:
            raise RunAborted

    def wait_until(self, ready: Callable[[], bool]) -> None:
        """Until ``ready()`` (a look at other ranks' cells); RunAborted if aborted first."""
        if ready():
            return
        if self._cond is not None:
            with self._cond:
                while not ready():
                    self.check()
                    self._cond.wait(THREAD_WAIT_SECONDS)
            return
        started = time.perf_counter()
        while not ready():
            self.check()
            waited = time.perf_counter() - started
            if waited < SPIN_SECONDS:
                continue
            if waited < YIELD_SECONDS:
                os.sched_yield()  # releases the GIL too: thread workers share one interpreter
            else:
                time.sleep(SLEEP_SECONDS)


class Rank:
    """One worker's part in a run: the loop of steps above, for rank ``msg.rank``."""

    def __init__(self, msg: RunSteps, side: RankSide, arrays: RankArrays) -> None:
        self.msg, self.side, self.a = msg, side, arrays
        self._ctl = side.control(arrays.control, msg.run, msg.rank)
        self._peers = arrays.control[1 : 1 + msg.ranks, PROGRESS]
        n = arrays.params.shape[1]
        self._lo, self._hi = split(n, msg.ranks, msg.rank)
        self._param_layers = [layer_views(row, side.sizes) for row in arrays.params]
        self._grad_layers = [layer_views(row, side.sizes) for row in arrays.grads]

    def run(self) -> int | None:
        msg, ctl = self.msg, self._ctl
        faults = dict(msg.faults)
        try:
            for t in range(msg.first, msg.last + 1):
                if t in faults:
                    ctl.mark_fault(t)
                    self.side.act_out(faults[t])
                offset, bounds = msg.batches.shards(t)
                self._gradients(t, offset, bounds)
                ctl.publish(PROGRESS, 2 * t - 1)
                self._wait(2 * t - 1)
                self._update(t, bounds)
                ctl.publish(PROGRESS, 2 * t)
                if t < msg.last:
                    self._wait(2 * t)
        except RunAborted:
            return None
        return msg.last

    def _gradients(self, t: int, offset: int, bounds: list[tuple[int, int]]) -> None:
        side = self.side
        first, stop = split(len(bounds), self.msg.ranks, self.msg.rank)
        params = self._param_layers[(t - 1) % 2]
        k = (t - 1) % self.msg.batches.steps_per_epoch
        for s in range(first, stop):
            self._ctl.check()
            rows = side.order[offset + bounds[s][0] : offset + bounds[s][1]]
            loss, correct = layers_gradient(
                params, self._grad_layers[s], side.activation, side.images[rows],
                side.labels[rows],
            )  # fmt: skip
            self.a.stats[k, s] = (loss, correct)

    def _update(self, t: int, bounds: list[tuple[int, int]]) -> None:
        a, lo, hi = self.a, self._lo, self._hi
        src, dst = (t - 1) % 2, t % 2
        self._ctl.check()
        reduce_and_update(
            self.msg.lr_schedule.hyper(t),
            a.grads[: len(bounds)],
            a.params[src, lo:hi],
            a.velocity[src, lo:hi],
            bounds[-1][1],
            params_out=a.params[dst, lo:hi],
            velocity_out=a.velocity[dst, lo:hi],
            first=lo,
        )

    def _wait(self, phase: int) -> None:
        """Until every rank has published ``phase`` of this run; RunAborted if aborted first."""
        need, peers = tag(self.msg.run, phase), self._peers
        self._ctl.wait_until(lambda: bool(peers.min() >= need))


def completed_steps(control: np.ndarray, run: int, ranks: int, before_first: int) -> int:
    """Steps every rank of ``run`` has finished (the last step whose state is complete)."""
    phases = control[1 : 1 + ranks, PROGRESS]
    if ranks and all(p >> 32 == run for p in phases):  # the first phase of a run is 2*first-1
        return int(min(p & 0xFFFFFFFF for p in phases)) // 2
    return before_first


def fault_reached(control: np.ndarray, run: int, rank: int) -> int:
    """The step of the last fault rank ``rank`` acted out in ``run`` (0 if none)."""
    cell = int(control[1 + rank, FAULT])
    return cell & 0xFFFFFFFF if cell >> 32 == run else 0
