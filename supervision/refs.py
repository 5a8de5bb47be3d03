"""The one interface a supervisor needs from an actor, whatever runs it.

Thread actors (:mod:`supervision.actor`) and process-backed actors (:mod:`supervision.process`)
both hand out refs that satisfy :class:`ActorHandle`; the supervisor only ever talks to this
protocol, so a new kind of actor plugs in without the supervisor changing.

Monitors are the primitive for observing exits (as ``erlang:monitor/2``): a callback that runs
exactly once, with a :class:`Down` carrying the exit reason. Links and supervisors are built on
them. Callbacks run in whichever thread detected the exit, so they must be quick and must not
block: the usual callback is ``some_actor_ref.tell``.
"""

from __future__ import annotations

import contextlib
import itertools
import queue
import threading
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import Any, Literal, Protocol, cast, runtime_checkable

import structlog
from pykka import ActorDeadError, Future, ThreadingFuture

from supervision.reasons import KILLED, NORMAL, Reason, describe

log = structlog.get_logger("supervision")

NOPROC = "noproc"
"""Reason delivered to a monitor set on an actor that had already exited (as in OTP)."""

ActorKind = Literal["thread", "process", "ray"]

_monitor_ids = itertools.count(1)


@dataclass(frozen=True)
class Monitor:
    """A monitor reference: what :meth:`ActorHandle.monitor` returns and :class:`Down` echoes."""

    id: int = field(default_factory=lambda: next(_monitor_ids))


@dataclass(frozen=True)
class Down:
    """The DOWN message: the monitored actor exited with ``reason``."""

    monitor: Monitor
    actor_urn: str
    reason: Reason
    ref: ActorHandle = field(repr=False, compare=False)


DownCallback = Callable[[Down], None]


@runtime_checkable
class ActorHandle(Protocol):
    """What a supervisor, a monitor or a caller may do with a running actor.

    The messaging half (``tell``, ``ask``, ``proxy``, ``is_alive``, ``actor_urn``) is Pykka's
    ``ActorRef`` interface; ``ask`` returns a ``pykka.Future``. The supervision half is ours.
    """

    actor_urn: str

    @property
    def kind(self) -> ActorKind:
        """Where the actor's behaviour runs: a thread here, its own process, or a Ray actor."""
        ...

    @property
    def pid(self) -> int | None:
        """The OS process id running the actor's behaviour, or None for a thread actor."""
        ...

    @property
    def exit_reason(self) -> Reason | None:
        """None while alive; the exit reason once it has exited."""
        ...

    def is_alive(self) -> bool: ...

    def tell(self, message: Any) -> None:
        """Send without waiting. Raises ``pykka.ActorDeadError`` if the actor is dead."""
        ...

    def ask(self, message: Any, *, block: bool = True, timeout: float | None = None) -> Any:
        """Send and get the reply (or a ``pykka.Future`` when ``block=False``).

        If the actor dies before replying, the future fails with ``pykka.ActorDeadError``
        promptly: no ask waits forever on a dead actor.
        """
        ...

    def proxy(self) -> Any: ...

    def stop(
        self, block: bool = True, timeout: float | None = None, *, reason: Reason = NORMAL
    ) -> bool:
        """Ask the actor to stop after its current message, running ``on_stop``.

        The exit reason seen by monitors is ``reason``. Returns True once the actor has
        exited, False if ``timeout`` ran out first (the caller may then :meth:`kill` it).
        """
        ...

    def kill(self, reason: Reason = KILLED) -> None:
        """Stop the actor now, without cleanup; monitors see ``reason`` (``killed`` by default;
        links pass the linked actor's reason, as an exit signal would).

        A process actor is sent SIGKILL and reaped. Python cannot kill a thread: a thread actor
        is marked dead at once (futures failed, monitors told, unregistered) and its thread
        exits when its current handler returns.
        """
        ...

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the actor has exited and its monitors were told; True if it has."""
        ...

    def monitor(self, callback: DownCallback) -> Monitor:
        """Call ``callback(Down(...))`` once when the actor exits (at once with ``noproc`` if
        it already has)."""
        ...

    def demonitor(self, monitor: Monitor) -> None: ...


class MonitorSet:
    """The monitors of one actor, and its exit: shared by every kind of actor handle.

    ``fire`` records the exit reason and calls every callback exactly once; a monitor added
    after that is called at once with ``noproc``. Thread-safe.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._callbacks: dict[Monitor, DownCallback] = {}
        self._reason: Reason | None = None
        self._exited = threading.Event()

    @property
    def reason(self) -> Reason | None:
        return self._reason

    @property
    def exited(self) -> bool:
        return self._exited.is_set()

    def wait(self, timeout: float | None = None) -> bool:
        return self._exited.wait(timeout)

    def add(self, ref: ActorHandle, callback: DownCallback) -> Monitor:
        monitor = Monitor()
        with self._lock:
            if not self._exited.is_set():
                self._callbacks[monitor] = callback
                return monitor
        _call(callback, Down(monitor, ref.actor_urn, NOPROC, ref))
        return monitor

    def remove(self, monitor: Monitor) -> None:
        with self._lock:
            self._callbacks.pop(monitor, None)

    def fire(self, ref: ActorHandle, reason: Reason) -> bool:
        """Record the exit and tell the monitors. Returns False if it had already fired."""
        with self._lock:
            if self._exited.is_set():
                return False
            self._reason = reason
            callbacks, self._callbacks = self._callbacks, {}
            self._exited.set()
        for monitor, callback in callbacks.items():
            _call(callback, Down(monitor, ref.actor_urn, reason, ref))
        return True


class MonitoredHandle:
    """The monitor half of :class:`ActorHandle`, shared by every kind: a handle that owns a
    :class:`MonitorSet` as ``_monitors`` gets ``exit_reason``, ``monitor`` and ``demonitor``."""

    _monitors: MonitorSet

    @property
    def exit_reason(self) -> Reason | None:
        return self._monitors.reason

    def monitor(self, callback: DownCallback) -> Monitor:
        return self._monitors.add(cast("ActorHandle", self), callback)  # mixed into handles

    def demonitor(self, monitor: Monitor) -> None:
        self._monitors.remove(monitor)

    def _report_exit(self, pending: Iterable[ThreadingFuture[Any]], reason: Reason) -> None:
        """The actor has exited: fail the asks still waiting for it, then tell the monitors.
        A future answered meanwhile (a kill racing a reply) keeps its first answer."""
        for future in pending:
            error = ActorDeadError(f"{self} exited ({describe(reason)}) before replying")
            error.exit_reason = reason  # type: ignore[attr-defined]  # how it died, for askers
            with contextlib.suppress(queue.Full):
                fail(future, error)
        self._monitors.fire(cast("ActorHandle", self), reason)


class WatchedHandle(MonitoredHandle):
    """What the kinds whose actor runs outside this process (process, ray) share: one thread
    of ours, ``_watcher``, waits for the actor's end and reports it."""

    _dead: bool
    _watcher: threading.Thread

    def is_alive(self) -> bool:
        return not self._dead

    def join(self, timeout: float | None = None) -> bool:
        if not self._monitors.wait(timeout):
            return False
        if threading.current_thread() is not self._watcher:
            self._watcher.join()  # it has nothing left to do but return
        return True


def fail(future: Future[Any], exc: BaseException) -> None:
    """Answer ``future`` with ``exc``: its ``get`` raises it."""
    future.set_exception((type(exc), exc, exc.__traceback__))


def _call(callback: DownCallback, down: Down) -> None:
    # A broken monitor callback must not stop the others from being told.
    try:
        callback(down)
    except Exception:
        log.exception("monitor_callback_failed", actor_urn=down.actor_urn)
