"""Which fault fires where: the job's fault plan and the decisions made from it, without actors.

Rules (the contract of ``--fault`` and ``--chaos``, see :mod:`otpnn.faults`):

- Each planned fault fires once. It is *due* from its point on (``step=N``: steps >= N;
  ``epoch=N``: epochs >= N; ``shard=N``: a run of shards reaching the N-th micro-shard of the
  job) until it is marked fired, so one that could not fire where planned (its worker was
  down, a run ended first) fires at the next chance, and the redo after recovery does not trip
  it again.
- A fault for the coordinator, the pool or the loader at ``step=N`` is a stop point: steps run
  up to N-1, then the coordinator acts it out before step N. A loader's ``epoch=N`` fault goes
  with the request for epoch N's order instead.
- A worker fault goes to the worker it names; ``worker=any`` goes to the first worker given
  work. In a run of steps, a fault is planned for one rank only.
- Chaos: when no planned fault applies, a worker's shards are drawn for (``Chaos.strikes``,
  from seed, step, shard and attempt alone); a redone step is a new attempt, so it draws again.

The book is thread-safe (a fault may be added while the job runs, from any thread); the
planner is used by the coordinator's thread only.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import dataclass

from otpnn.faults import Chaos, Fault
from otpnn.schedule import Batches

OWN_TARGETS = ("coordinator", "pool", "loader")  # faults the coordinator acts out or delivers


def split(n: int, parts: int, part: int) -> tuple[int, int]:
    """Bounds of ``part`` of ``parts`` contiguous, near-equal pieces of range(n)."""
    return n * part // parts, n * (part + 1) // parts


class FaultBook:
    """The planned faults of a job (ids are their positions) and which have fired."""

    def __init__(self, faults: Sequence[Fault] = ()) -> None:
        self._lock = threading.Lock()
        self._faults: list[Fault] = list(faults)
        self._fired: set[int] = set()
        self._version = 0

    @property
    def version(self) -> int:
        """Bumped by :meth:`add`: a plan made before a different version is out of date."""
        return self._version

    def add(self, fault: Fault) -> None:
        with self._lock:
            self._faults.append(fault)
            self._version += 1

    def any_unfired(self, target: str) -> bool:
        """Whether a fault for ``target`` is planned and has not fired."""
        with self._lock:
            return any(
                i not in self._fired and f.target == target for i, f in enumerate(self._faults)
            )

    def due(self, target: str, when: str, at: int) -> list[tuple[int, Fault]]:
        """Unfired faults for ``target`` whose point ``when``=N is <= ``at``, in plan order."""
        with self._lock:
            return [
                (i, f)
                for i, f in enumerate(self._faults)
                if i not in self._fired and f.target == target and f.when == when and f.at <= at
            ]

    def mark_fired(self, fault_id: int) -> None:
        with self._lock:
            self._fired.add(fault_id)

    @property
    def fired(self) -> int:
        with self._lock:
            return len(self._fired)

    def planned(self) -> list[Fault]:
        """Every fault planned, in plan order (also those added while the job ran)."""
        with self._lock:
            return list(self._faults)

    def unfired(self) -> list[Fault]:
        """The planned faults that have not fired, in plan order."""
        with self._lock:
            return [f for i, f in enumerate(self._faults) if i not in self._fired]


@dataclass
class Planned:
    """A fault a worker acts out at the start of ``step`` (``fault`` None: a chaos strike)."""

    step: int
    action: str
    fault_id: int | None
    fault: Fault | None
    fired: bool = False


@dataclass(frozen=True)
class Fired:
    """A worker fault that took place: ``planned`` acted out by worker ``index``."""

    index: int
    planned: Planned


class FaultPlanner:
    def __init__(self, book: FaultBook, chaos: Chaos | None, batches: Batches) -> None:
        self.book = book
        self.chaos = chaos
        self.batches = batches
        self._attempts: dict[int, int] = {}  # step -> times work of it was lost

    # -- the coordinator, the pool, the loader ---------------------------------------------------
    def stop_point(self, step: int, last: int, total_steps: int) -> int:
        """The last step to run from ``step`` on, at most ``last``: the one before the next
        planned fault of the coordinator, the pool or the loader (``step=N``)."""
        for target in OWN_TARGETS:
            for _, fault in self.book.due(target, "step", total_steps):
                if fault.at > step:
                    last = min(last, fault.at - 1)
        return last

    def own_faults(self, step: int, epoch: int, *, first_of_epoch: bool) -> list[Fault]:
        """Faults of the coordinator, the pool or the loader due before ``step``, marked fired
        (a loader's ``epoch=N`` fault is not one: see :meth:`loader_epoch_fault`)."""
        due = []
        for target in OWN_TARGETS:
            due += self.book.due(target, "step", step)
            if first_of_epoch and target != "loader":
                due += self.book.due(target, "epoch", epoch)
        for fault_id, _ in due:
            self.book.mark_fired(fault_id)
        return [fault for _, fault in due]

    def loader_epoch_faults(self, epoch: int) -> list[Fault]:
        """The loader's faults due when it draws epoch ``epoch``'s order, marked fired."""
        due = self.book.due("loader", "epoch", epoch)
        for fault_id, _ in due:
            self.book.mark_fired(fault_id)
        return [fault for _, fault in due]

    # -- workers -----------------------------------------------------------------------------
    def _workers_untouched(self) -> bool:
        """No chaos and no unfired worker fault: no worker acts anything out, and the plans of
        a run need no look at each of its steps (a look the workers would wait out: they start
        once the run is planned)."""
        return self.chaos is None and not self.book.any_unfired("worker")

    def redo(self, step: int) -> None:
        """Work of ``step`` was lost and is redone: chaos draws again for it."""
        self._attempts[step] = self._attempts.get(step, 0) + 1

    def for_worker(
        self,
        step: int,
        epoch: int,
        index: int,
        shards: range,
        *,
        first: bool,
        taken: set[int] | None = None,
    ) -> Planned | None:
        """The fault worker ``index`` acts out at ``step`` computing ``shards`` (indices in the
        step's batch), if any: a due planned one not ``taken`` (``worker=any`` only for the
        ``first`` worker), else a chaos strike. Not marked fired."""
        for fault_id, fault in self._due(step, epoch, shards):
            if taken is not None and fault_id in taken:
                continue
            if fault.worker is None and not first:
                continue
            if fault.worker is not None and fault.worker != index:
                continue
            return Planned(step, fault.action, fault_id, fault)
        chaos, attempt = self.chaos, self._attempts.get(step, 0)
        if chaos is not None and any(chaos.strikes(step, s, attempt) for s in shards):
            return Planned(step, "crash", None, None)
        return None

    def for_share(
        self, share: range, epoch: int, index: int, *, first: bool, taken: set[int]
    ) -> Planned | None:
        """The first fault worker ``index`` meets along the steps ``share`` of a local SGD
        round (it acts it out before the share's local steps): :meth:`for_worker` on each step's
        shards in turn. Not marked fired."""
        if self._workers_untouched():
            return None
        for step in share:
            shards = range(len(self.batches.shards(step)[1]))
            found = self.for_worker(step, epoch, index, shards, first=first, taken=taken)
            if found is not None:
                return found
        return None

    def _due(self, step: int, epoch: int, shards: range) -> list[tuple[int, Fault]]:
        """Unfired worker faults due for work on ``shards`` of ``step``, in plan order."""
        book = self.book
        candidates = book.due("worker", "step", step) + book.due("worker", "epoch", epoch)
        if shards:
            reached = self.batches.shards_before(step - 1) + shards[-1] + 1
            candidates += book.due("worker", "shard", reached)
        return candidates

    def plan_run(
        self, first: int, last: int, epoch: int, indices: Sequence[int]
    ) -> list[list[Planned]]:
        """Per rank (worker ``indices[rank]``, computing its even share of each step's shards),
        the faults it acts out in steps ``first..last``; each planned fault goes to one rank."""
        plans: list[list[Planned]] = [[] for _ in indices]
        if self._workers_untouched():
            return plans
        taken: set[int] = set()
        for step in range(first, last + 1):
            n = len(self.batches.shards(step)[1])
            for rank, index in enumerate(indices):
                a, b = split(n, len(indices), rank)
                found = self.for_worker(
                    step, epoch, index, range(a, b), first=rank == 0, taken=taken
                )
                if found is not None:
                    if found.fault_id is not None:
                        taken.add(found.fault_id)
                    plans[rank].append(found)
        return plans

    def plan_turns(
        self, first: int, last: int, epoch: int, indices: Sequence[int]
    ) -> tuple[list[int], list[list[Planned]]]:
        """For ranks that each compute whole steps: which rank computes each of steps
        ``first..last``, and per rank the faults it acts out. The ranks take turns (rank r:
        steps first + r, first + r + R, ...), except that a worker which a due fault names
        takes over the turn of the step where it is due (swapping turns with its owner), so
        that the fault fires there."""
        turns = list(range(len(indices)))  # turns[k]: the rank of turn k of each round
        plans: list[list[Planned]] = [[] for _ in indices]
        if self._workers_untouched():
            return [(step - first) % len(indices) for step in range(first, last + 1)], plans
        owners: list[int] = []
        taken: set[int] = set()
        for step in range(first, last + 1):
            shards = range(len(self.batches.shards(step)[1]))
            turn = (step - first) % len(indices)
            named = [f.worker for i, f in self._due(step, epoch, shards) if i not in taken]
            for worker in named:
                if worker in indices:
                    k = turns.index(indices.index(worker))
                    turns[turn], turns[k] = turns[k], turns[turn]
                    break
            rank = turns[turn]
            owners.append(rank)
            found = self.for_worker(step, epoch, indices[rank], shards, first=True, taken=taken)
            if found is not None:
                if found.fault_id is not None:
                    taken.add(found.fault_id)
                plans[rank].append(found)
        return owners, plans

    def reached(
        self, plans: Sequence[Sequence[Planned]], indices: Sequence[int], steps: Sequence[int]
    ) -> list[Fired]:
        """Rank r reached step ``steps[r]`` (acted out its faults up to there): the planned
        faults that newly took place, marked fired, ordered by (step, worker index)."""
        found = [
            Fired(index, p)
            for plan, index, step in zip(plans, indices, steps, strict=True)
            for p in plan
            if p.step <= step and not p.fired
        ]
        found.sort(key=lambda f: (f.planned.step, f.index))
        for f in found:
            self.fire(f.planned)
        return found

    def fire(self, planned: Planned) -> None:
        """``planned`` took place (or is about to, as it travels with the work)."""
        planned.fired = True
        if planned.fault_id is not None:
            self.book.mark_fired(planned.fault_id)
