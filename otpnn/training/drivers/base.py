"""What a protocol driver is, and what it may ask of the coordinator that hosts it.

The coordinator owns a job's lifecycle: where the run stands (step, epoch), where it must stop
(epoch ends, checkpoints, planned faults of its own), the epoch's tally and the snapshots. A
:class:`Driver` owns what happens *inside* a stretch of steps for one protocol: the shared
segments it allocates, the messages it sends the workers, how it watches them and what it
does when one fails. It reports back only through :class:`Host`: a finished step
(:meth:`Host.commit`), a lost worker (:meth:`Host.failure`), a fault that took place.

Contract of :meth:`Driver.run` (every driver keeps it; the coordinator relies on nothing else):

- steps are committed in order, each exactly once, and only once the state after it (the
  parameters and optimizer state returned by :meth:`Driver.state`) is whole, or, for a
  protocol whose state is whole only at some steps (:meth:`Driver.boundary`), once the state
  after the next such step is: then that step's and those before it are committed together;
- it may return before ``last`` (a lost worker, a fault planned meanwhile): the coordinator
  snapshots if due and calls again from the next step;
- when the coordinator is asked to stop (``Host.interrupted()``), it leaves within a bounded
  time by raising :class:`Interrupted`, having committed every step it finished;
- whatever workers die or hang, a redone step gives the bits the first attempt would have.
"""

from __future__ import annotations

import time
from abc import ABC, abstractmethod
from collections.abc import Iterable, Sequence
from typing import Any, ClassVar, Protocol

import numpy as np
import pykka

from otpnn.config import TrainConfig
from otpnn.lr_schedule import LrSchedule
from otpnn.schedule import Batches
from otpnn.training.fault_planner import FaultPlanner, Planned
from supervision.reasons import KILLED, ExitedWithCode, KilledBySignal
from supervision.refs import ActorHandle
from supervision.shm import SharedArray

Workers = Sequence[tuple[int, ActorHandle]]  # live workers: (index, handle), by index


def loss_kind(exc: BaseException) -> str:
    """How a worker whose ask failed with ``exc`` was lost, for its event ``worker_<kind>``:
    ``killed`` (SIGKILL, or a thread actor's kill()), ``exit`` (it exited with a code) or
    ``crash`` (an exception, or a death whose reason is not known)."""
    reason = getattr(exc, "exit_reason", None)
    if reason == KILLED or isinstance(reason, KilledBySignal):
        return "killed"
    if isinstance(reason, ExitedWithCode):
        return "exit"
    return "crash"


LOOK_EVERY = 0.05  # seconds: how soon a driver waiting for a reply notices a stop or kill


def send(worker: ActorHandle, message: Any) -> pykka.Future[Any] | None:
    """Ask ``worker`` without waiting; None if it is already dead (:func:`reply` then fails
    as a dead worker's reply would)."""
    try:
        return worker.ask(message, block=False)
    except pykka.ActorDeadError:
        return None


def reply(future: pykka.Future[Any] | None, timeout: float) -> Any:
    """The reply to a :func:`send`, waited for at most ``timeout`` (pykka.Timeout after)."""
    if future is None:
        raise pykka.ActorDeadError("worker died before the message was sent")
    return future.get(timeout=timeout)


def await_reply(host: Host, future: pykka.Future[Any] | None, deadline: float) -> Any:
    """The reply to a :func:`send`, waited for in slices so that a stop or kill is noticed
    within LOOK_EVERY; pykka.Timeout once ``deadline`` (monotonic) has passed."""
    while True:
        remaining = deadline - time.monotonic()
        try:
            return reply(future, max(0.0, min(remaining, LOOK_EVERY)))
        except pykka.Timeout:
            if remaining <= LOOK_EVERY:
                raise
            if host.interrupted():
                raise Interrupted from None


class Interrupted(Exception):
    """The coordinator was asked to stop, or killed, while a driver waited inside a step."""


class Host(Protocol):
    """The coordinator, as a driver sees it."""

    config: TrainConfig
    batches: Batches  # how steps map to samples and micro-shards
    lr_schedule: LrSchedule  # the hyperparameters of each step
    planner: FaultPlanner  # which faults the workers act out, and where
    step_timeout: float  # seconds a worker may take for its part of a step

    def await_workers(self) -> Workers:
        """Live workers that have not failed this coordinator (bounded wait for a restart)."""
        ...

    def loader(self) -> ActorHandle: ...

    def commit(self, step: int, losses: Iterable[float], corrects: Iterable[float]) -> None:
        """Step ``step`` is done: its state is whole; its shards' (loss, correct) in order."""
        ...

    def show_progress(self, step: int, epoch: int) -> None:
        """Steps up to ``step`` are done (live progress, before they are committed)."""
        ...

    def failure(self, step: int, index: int, worker: ActorHandle, kind: str, reason: str) -> None:
        """Worker ``index`` failed at ``step`` (``kind``: crash or hang); its incarnation is
        not given work again."""
        ...

    def lost_step(self, step: int) -> None:
        """Work of ``step`` was lost and will be redone."""
        ...

    def fault_fired(self, planned: Planned, step: int, index: int) -> None:
        """Worker ``index`` acts out ``planned`` at ``step``: record it."""
        ...

    def interrupted(self) -> bool:
        """A stop was requested (or the coordinator killed): leave the run."""
        ...


class Driver(ABC):
    """One protocol's way of running steps; one instance per coordinator incarnation."""

    name: ClassVar[str]

    def __init__(self, host: Host) -> None:
        self.host = host
        self._segments: list[SharedArray] = []  # owned: unlinked by close()

    @classmethod
    @abstractmethod
    def unsupported(cls, backend: str) -> str | None:
        """Why this protocol cannot run ``backend``'s workers here (None: it can)."""

    def boundary(self, step: int) -> int:
        """The first step at or after ``step`` after which the state is whole: a stretch may
        end only there (every step, for a synchronous protocol)."""
        return step

    @abstractmethod
    def start(self, step: int, params: np.ndarray, velocity: np.ndarray | None) -> None:
        """Allocate what the protocol needs and set the state after ``step`` (``velocity``
        None: no momentum buffer yet, zeros)."""

    @abstractmethod
    def state(self, step: int) -> tuple[np.ndarray, np.ndarray]:
        """Views of (parameters, momentum buffer) after ``step``, the last step committed."""

    def earlier(self, step: int) -> np.ndarray | None:
        """The parameter versions before ``step`` that the next steps read beside the state
        (an algorithm whose gradients are taken on older parameters: async's), kept with it in
        snapshots and checkpoints; None for the others, which need only the state."""
        return None

    def restore_earlier(self, earlier: np.ndarray | None) -> None:
        """Before :meth:`start`: what :meth:`earlier` gave for the snapshot resumed from."""
        if earlier is not None:
            raise ValueError(f"the {self.name} protocol keeps no earlier parameter versions")

    def open_epoch(self, epoch: int) -> None:  # noqa: B027 (optional hook: most need nothing)
        """The loader has drawn epoch ``epoch``'s order (before the epoch's first run)."""

    @abstractmethod
    def run(self, first: int, last: int, epoch: int) -> None:
        """Run steps ``first..last`` of epoch ``epoch`` (see the module's contract)."""

    def close(self) -> None:
        """Release everything :meth:`start` made; safe to call twice and from any exit path
        (a run in progress without the coordinator must end: its workers leave it). Here: the
        shared memory it owns is unlinked."""
        for shared in self._segments:
            shared.close()
            shared.unlink()
        self._segments.clear()

    def _own(self, shared: SharedArray) -> SharedArray:
        """``shared`` is this driver's: :meth:`close` unlinks it."""
        self._segments.append(shared)
        return shared
