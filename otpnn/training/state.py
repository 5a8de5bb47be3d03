"""What a training job knows that must outlive any of its actors.

The supervision tree restarts actors; this object is not an actor and is not restarted. It holds
the latest snapshot (so a restarted Coordinator resumes from it), the faults already fired (so a
redo does not trip them again), the event log, live progress for observers, and the outcome.
Every method is thread-safe: actors, the job owner and an HTTP service read and write it.
"""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from otpnn.faults import Chaos, Fault
from otpnn.training.fault_planner import FaultBook
from otpnn.validation import Best


@dataclass
class EpochTally:
    """What the steps of the current epoch add up to, so far: its row's training columns."""

    loss_sum: float = 0.0
    correct: int = 0
    samples: int = 0
    seconds: float = 0.0

    def add_step(
        self, losses: Iterable[float], corrects: Iterable[float], samples: int
    ) -> tuple[float, int]:
        """Count one finished step: its shards' (loss sum, correct count), in shard order;
        returns the step's own (loss sum, correct count)."""
        step_loss, step_correct = 0.0, 0
        for loss, correct in zip(losses, corrects, strict=True):
            step_loss += loss
            step_correct += int(correct)
        self.loss_sum += step_loss
        self.correct += step_correct
        self.samples += samples
        return float(step_loss), step_correct

    def row(self, epoch: int, test_loss: float, test_accuracy: float) -> dict[str, Any]:
        """The report's row for the finished epoch ``epoch``."""
        return {
            "epoch": epoch,
            "seconds": self.seconds,
            "samples_per_second": self.samples / self.seconds if self.seconds else 0.0,
            "train_loss": self.loss_sum / self.samples,
            "train_accuracy": self.correct / self.samples,
            "test_loss": test_loss,
            "test_accuracy": test_accuracy,
        }


@dataclass
class Snapshot:
    """The state after ``step`` updates: enough to continue bit-identically."""

    step: int
    params: np.ndarray
    optimizer: dict[str, np.ndarray]
    history: list[dict[str, Any]]
    tally: EpochTally = field(default_factory=EpochTally)  # of the epoch ``step`` is in
    best: Best | None = None  # with keep_best: the best epoch up to ``step``
    # The parameter versions before ``step`` the next steps read (async's S-1; else None).
    earlier: np.ndarray | None = None


@dataclass
class Progress:
    step: int = 0
    epoch: int = 0
    total_steps: int = 0
    last_epoch: dict[str, Any] | None = None


@dataclass
class Event:
    """A fault or recovery, as it goes into the report's ``events``."""

    kind: str
    actor: str
    step: int
    reason: str
    time: float = field(default_factory=time.time)
    recovery_seconds: float | None = None
    pid: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {k: v for k, v in self.__dict__.items() if v is not None}


class JobState:
    def __init__(
        self,
        faults: list[Fault] | None = None,
        chaos: Chaos | None = None,
        on_progress: Callable[[Progress], None] | None = None,
    ) -> None:
        self._lock = threading.Lock()
        self._snapshot: Snapshot | None = None
        self.faults = FaultBook(faults or ())
        self.chaos = chaos
        self._events: list[Event] = []
        self._starts: dict[str, int] = {}
        self.pids: dict[str, int] = {}
        self.progress = Progress()
        self._on_progress = on_progress
        self.last_progress = time.monotonic()  # when a step last finished (or a start/restart)
        self.done = threading.Event()
        self.result: dict[str, Any] | None = None
        self.failure: str | None = None  # why the job cannot go on, outside the tree's reach
        # Told (step, train loss, train accuracy) of every step committed, on the coordinator's
        # thread (so it must be quick); in a lockstep run at the run's end. A redone step is
        # told again, with the same values.
        self.on_step: Callable[[int, float, float], None] | None = None

    # -- snapshots ---------------------------------------------------------------------------
    def save_snapshot(self, snapshot: Snapshot) -> None:
        with self._lock:
            self._snapshot = snapshot

    def latest_snapshot(self) -> Snapshot | None:
        """A deep copy: the caller owns and mutates it."""
        with self._lock:
            return copy.deepcopy(self._snapshot)

    # -- faults ------------------------------------------------------------------------------
    def add_fault(self, fault: Fault) -> None:
        """Plan a fault, also while the job runs (from any thread)."""
        self.faults.add(fault)

    @property
    def faults_fired(self) -> int:
        return self.faults.fired

    def planned_faults(self) -> list[Fault]:
        """Every fault planned for the job, in the order planned (also those added while it ran)."""
        return self.faults.planned()

    def unfired_faults(self) -> list[Fault]:
        """Planned faults that have not fired. After a finished job these never did (e.g. a step
        past the end, or a worker that was never given work): a fault-injection run that tested
        nothing, which the CLI reports as an error and a report records."""
        return self.faults.unfired()

    # -- events, starts ----------------------------------------------------------------------
    def record(self, event: Event) -> None:
        with self._lock:
            self._events.append(event)

    def events(self) -> list[Event]:
        with self._lock:
            return list(self._events)

    def started(self, actor: str, pid: int | None) -> None:
        """An actor (re)started: counts restarts and keeps pids discoverable."""
        with self._lock:
            n = self._starts.get(actor, 0)
            self._starts[actor] = n + 1
            if pid is not None:
                self.pids[actor] = pid
        step = self.progress.step
        if pid is not None:
            self.record(Event("started", actor, step, "process started", pid=pid))
        if n:
            self.record(Event("restart", actor, step, f"restart #{n}", pid=pid))

    @property
    def restarts(self) -> int:
        with self._lock:
            return sum(n - 1 for n in self._starts.values() if n > 1)

    def restarts_by_actor(self) -> dict[str, int]:
        with self._lock:
            return {a: n - 1 for a, n in self._starts.items() if n > 1}

    # -- progress, outcome --------------------------------------------------------------------
    def touch(self) -> None:
        """Reset the hang watchdog (a step finished, or the coordinator (re)started)."""
        self.last_progress = time.monotonic()

    def advance(
        self, step: int, epoch: int, total_steps: int, last_epoch: dict[str, Any] | None
    ) -> None:
        self.touch()
        with self._lock:
            self.progress = Progress(
                step, epoch, total_steps, last_epoch or self.progress.last_epoch
            )
        if self._on_progress is not None:
            self._on_progress(self.progress)

    def step_metrics(self, step: int, loss: float, accuracy: float) -> None:
        if self.on_step is not None:
            self.on_step(step, loss, accuracy)

    def finish(self, result: dict[str, Any]) -> None:
        self.result = result
        self.done.set()

    def fail(self, reason: str) -> None:
        """End the job with ``reason``: a failure no restart can mend (a checkpoint that cannot
        be written, a full disk). The first reason stands."""
        with self._lock:
            if self.failure is None:
                self.failure = reason
        self.done.set()
