"""Local SGD lockstep runs, the workers' side: the workers train the rounds and average them.

Why: a local SGD round is H local steps per replica, then an average. Sent one message per
share and averaged by the coordinator (:mod:`~otpnn.training.drivers.local_sgd`), every round
leaves the workers idle while the replies travel, the coordinator averages alone and the next
shares travel back. Here, as in sync SGD's lockstep runs, one message per worker starts a *run*
of rounds (up to an epoch) and the workers do the rest between them in shared memory (the
coordinator's side, which starts and watches runs, is
:mod:`otpnn.training.drivers.local_sgd_lockstep`):

for round j of the run (its shares: the ranks of :class:`~otpnn.local_sgd.RoundSchedule`), rank r
of R:

1. trains shares ``r, r + R, ...`` of the round: for each, act out its planned faults, copy the
   global state (row ``g`` of ``state``: parameters, momentum) into a private replica, take its
   local steps there (:func:`~otpnn.local_sgd.local_steps`, the serial reference's arithmetic),
   and only then write it into the share's replica row and each batch's (loss, correct) per
   micro-shard into ``stats`` (a killed thread worker, which Python cannot stop, writes nothing
   shared after its check); publish phase ``2j-1``; wait until every rank has published it;
2. averages its slice of the parameter vector over the round's replicas in rank order into row
   ``1 - g`` of ``state`` (``average_into`` is element-wise, so slices give the bits of the
   whole); publish phase ``2j``; wait until every rank has (not after the run's last round).

Recovery: the state after round j lives in row ``(g0 + j) % 2`` (``g0``: the run's start row);
it is read by round j+1's training and not written again before round j+2's averaging, which
begins after every rank has finished round j+1's training (the barrier of phase ``2j+3``). So
whatever dies, hangs or is stopped, and wherever, the state after ``c = min over ranks of
phase // 2`` rounds is intact: the coordinator aborts the run, keeps those rounds and starts a
new run after them with the workers it has, whose replicas start again from that state. Cells,
tags, the abort check and waiting are lockstep's
(:class:`~otpnn.training.drivers.lockstep_rank.RankControl`).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from otpnn.local_sgd import Batch, LocalBuffers, RoundSchedule, average_into, local_steps
from otpnn.lr_schedule import LrSchedule
from otpnn.schedule import Batches, shard_bounds
from otpnn.training.drivers.lockstep_rank import PROGRESS, RankSide, RunAborted, tag
from otpnn.training.drivers.task import WorkerSide, WorkerTask
from otpnn.training.fault_planner import split
from supervision.shm import ArrayDescriptor


@dataclass(frozen=True, slots=True)
class RoundSegments:
    """The coordinator's shared arrays, named for the workers.

    state: (2, 2, P), the global (parameters, momentum) in two rows by round parity; replicas:
    (N, 2, P), one per rank of a round; stats: (steps_per_epoch, max_shards, 2) float64 (loss
    sum, correct) by step of the epoch; control: lockstep's.
    """

    state: ArrayDescriptor
    replicas: ArrayDescriptor
    stats: ArrayDescriptor
    control: ArrayDescriptor


@dataclass(frozen=True, slots=True)
class RunRounds(WorkerTask):
    """Coordinator -> Worker: be rank ``rank`` of ``ranks`` for the rounds of steps
    ``first..last`` (one epoch, ``epoch``; ``first`` begins a round and ``last`` ends one) of run
    ``run``, starting from row ``start_row`` of the global state; act out ``faults`` ((step,
    action) pairs) before the share holding each step. The reply is the last step of the run,
    or None if the run was aborted."""

    run: int
    rank: int
    ranks: int
    first: int
    last: int
    epoch: int
    start_row: int
    schedule: RoundSchedule
    segments: RoundSegments
    batches: Batches
    lr_schedule: LrSchedule
    faults: tuple[tuple[int, str], ...] = ()

    def perform(self, worker: WorkerSide) -> int | None:
        seg = self.segments
        arrays = RoundRankArrays(
            worker.attach("local-sgd.state", seg.state),
            worker.attach("local-sgd.replicas", seg.replicas),
            worker.attach("local-sgd.stats", seg.stats),
            worker.attach("control", seg.control),
        )
        return RoundRank(self, RankSide.of(worker, self.epoch, seg.control), arrays).run()


@dataclass
class RoundRankArrays:
    """A worker's views of the coordinator's segments for one run."""

    state: np.ndarray
    replicas: np.ndarray
    stats: np.ndarray
    control: np.ndarray


class RoundRank:
    """One worker's part in a run: the loop of rounds above, for rank ``msg.rank``."""

    def __init__(self, msg: RunRounds, side: RankSide, arrays: RoundRankArrays) -> None:
        self.msg, self.side, self.a = msg, side, arrays
        self._ctl = side.control(arrays.control, msg.run, msg.rank)
        self._peers = arrays.control[1 : 1 + msg.ranks, PROGRESS]
        n_params = arrays.state.shape[2]
        self._lo, self._hi = split(n_params, msg.ranks, msg.rank)
        n_shards = len(shard_bounds(msg.batches.batch_size, msg.batches.shard_size))
        self._buffers = LocalBuffers(n_shards, side.sizes, arrays.state.dtype)
        self._replica = np.empty((2, n_params), arrays.state.dtype)  # trained here, then shared

    def run(self) -> int | None:
        msg, ctl = self.msg, self._ctl
        row = msg.start_row
        rounds = list(msg.schedule.rounds(msg.first, msg.last))
        try:
            for j, rnd in enumerate(rounds, start=1):
                for s in range(msg.rank, len(rnd.shares), msg.ranks):
                    self._train(rnd.shares[s], s, row)
                ctl.publish(PROGRESS, 2 * j - 1)
                self._wait(2 * j - 1)
                self._average(len(rnd.shares), row)
                row = 1 - row
                ctl.publish(PROGRESS, 2 * j)
                if j < len(rounds):
                    self._wait(2 * j)
        except RunAborted:
            return None
        return msg.last

    def _train(self, share: range, s: int, row: int) -> None:
        """Share ``s`` (its steps ``share``) from the global state in ``row`` on its replica."""
        msg, a, side, ctl = self.msg, self.a, self.side, self._ctl
        for step, action in msg.faults:
            if step in share:
                ctl.mark_fault(step)
                side.act_out(action)
        replica = self._replica
        np.copyto(replica, a.state[row])
        batches = []
        for step in share:
            offset, bounds = msg.batches.shards(step)
            batches.append(Batch(step, offset, bounds[-1][1]))
        results = local_steps(
            msg.lr_schedule, side.sizes, side.activation, msg.batches.shard_size, replica[0],
            replica[1], side.images, side.labels, side.order, batches, self._buffers,
        )  # fmt: skip
        ctl.check()  # a killed thread worker's rank trains on, but writes nothing shared
        np.copyto(a.replicas[s], replica)
        per_epoch = msg.batches.steps_per_epoch
        for step, (losses, corrects) in zip(share, results, strict=True):
            k = (step - 1) % per_epoch
            a.stats[k, : len(losses), 0] = losses
            a.stats[k, : len(losses), 1] = corrects

    def _average(self, n: int, row: int) -> None:
        a, lo, hi = self.a, self._lo, self._hi
        self._ctl.check()
        for i in range(2):  # parameters, then the momentum buffer
            average_into(a.replicas[:n, i, lo:hi], a.state[1 - row, i, lo:hi])

    def _wait(self, phase: int) -> None:
        """Until every rank has published ``phase`` of this run; RunAborted if aborted first."""
        need, peers = tag(self.msg.run, phase), self._peers
        self._ctl.wait_until(lambda: bool(peers.min() >= need))


def completed_rounds(control: np.ndarray, run: int, ranks: int) -> int:
    """Rounds every rank of ``run`` has finished (their averages are whole)."""
    phases = control[1 : 1 + ranks, PROGRESS]
    if ranks and all(int(p) >> 32 == run for p in phases):
        return int(min(int(p) & 0xFFFFFFFF for p in phases)) // 2
    return 0
