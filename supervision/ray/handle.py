"""The parent side of a Ray actor: :class:`RayActorRef`, an :class:`ActorHandle`.

A behaviour (a Pykka actor class) runs inside a :class:`~.runner.RayRunner` Ray actor, which
Ray places on any node of the cluster. Ray's own fault tolerance is off (``max_restarts=0``,
``max_task_retries=0``): the supervisor alone decides what restarts, as for every other kind.

- **Messages**: ``tell``/``ask``/``stop`` are calls of the runner's default concurrency group,
  executed in submission order. An ask's pykka future is fulfilled by a done-callback on its
  ObjectRef's ``future()``: no thread per ask, no polling.
- **Death detection**: one watcher thread per actor blocks in ``ray.wait`` on the two refs the
  runner keeps open (see :mod:`.runner`). If ``exit_record`` comes back first, the behaviour
  ended (stop, crash): the watcher kills the process and waits for Ray to confirm it is dead.
  If ``until_killed`` fails first, the process died under us (``ray.kill``, ``kill -9``, node
  loss): the reason is Ray's own ``RayActorError``/``ActorDiedError``, whose text says why. A
  lost node is reported once Ray's health checks declare it dead (seconds; see Ray's
  ``health_check_*`` settings). Then pending asks fail with ``ActorDeadError``, monitors fire.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Mapping
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import pykka
import ray
from pykka import ActorDeadError, ThreadingFuture
from ray import cloudpickle
from ray.exceptions import GetTimeoutError, RayActorError, RayError, RayTaskError

from supervision.process.handle import ProcessActorProxy
from supervision.process.runner import ASK, TELL
from supervision.ray.runner import CRASHED, EXIT_GROUP, RayRunner
from supervision.reasons import KILLED, NORMAL, Reason
from supervision.refs import MonitorSet, WatchedHandle, fail

_remote: Any = ray.remote  # it takes concurrency_groups for actor classes; its overloads omit it
_remote_runner = _remote(concurrency_groups={EXIT_GROUP: 2})(RayRunner)


@dataclass(frozen=True)
class RayOptions:
    """How a Ray actor is placed and started. Set per class as ``ray_options``.

    - ``num_cpus``: CPUs Ray reserves for the actor (Ray also sets ``OMP_NUM_THREADS`` to it in
      the actor's process, so a 1-CPU actor runs single-threaded BLAS).
    - ``start_timeout``: seconds to wait for Ray to place the actor and for ``on_start``; a
      cluster without room for it fails the start after this.
    - ``options``: any other ``.options()`` for the Ray actor (``resources``,
      ``scheduling_strategy``, ``runtime_env`` ...). Restarts cannot be turned back on.
    """

    num_cpus: float = 0
    start_timeout: float = 60.0
    options: Mapping[str, Any] = field(default_factory=dict)


# How long an ended actor's process is kept for the replies it sent to arrive (seconds).
REPLY_GRACE = 2.0


class RayActorRef(WatchedHandle):
    """A ref to an actor running as a Ray actor; Pykka's ``ActorRef`` interface plus the
    supervision half of :class:`~supervision.refs.ActorHandle`."""

    kind: ClassVar[Literal["ray"]] = "ray"

    def __init__(
        self, actor_class: type, args: tuple[Any, ...], kwargs: dict[str, Any], opts: RayOptions
    ) -> None:
        self.actor_class = actor_class
        self.actor_urn = uuid.uuid4().urn
        self._opts = opts
        self._lock = threading.Lock()
        self._pending: dict[int, ThreadingFuture[Any]] = {}
        self._replies: dict[int, ray.ObjectRef] = {}  # of the pending asks, by the same key
        self._dead = False
        self._kill_reason: Reason | None = None
        self._stop_reason: Reason | None = None
        self._monitors = MonitorSet()
        # cloudpickle, as Ray itself does: classes defined in a script or a test work too.
        payload = cloudpickle.dumps((actor_class, args, kwargs))
        self._actor = _remote_runner.options(
            **opts.options,
            num_cpus=opts.num_cpus,
            max_restarts=0,
            max_task_retries=0,
            name=None,
        ).remote(self.actor_urn)
        self._pid: int | None = None
        self._attrs = self._await_start(payload)
        self._exit_ref = self._actor.exit_record.remote()
        self._death_ref = self._actor.until_killed.remote()
        self._watcher = threading.Thread(
            target=self._watch, name=f"ray-actor-watcher-{self._pid}", daemon=True
        )
        self._watcher.start()

    def __repr__(self) -> str:
        return f"<RayActorRef for {self}>"

    def __str__(self) -> str:
        return f"{self.actor_class.__name__} ({self.actor_urn}, ray pid {self._pid})"

    # -- ActorHandle: supervision half ---------------------------------------------------

    @property
    def pid(self) -> int | None:
        """The pid of the Ray worker process, on whichever node Ray placed it."""
        return self._pid

    def stop(
        self, block: bool = True, timeout: float | None = None, *, reason: Reason = NORMAL
    ) -> bool:
        """Run ``on_stop`` after the messages already sent, then end the process. Returns
        False if it has not exited within ``timeout`` (then :meth:`kill` it)."""
        with self._lock:
            if self._stop_reason is None:
                self._stop_reason = reason
            if not self._dead:
                self._actor.stop.remote()
        if not block:
            return self._monitors.exited
        return self.join(timeout)

    def kill(self, reason: Reason = KILLED) -> None:
        """``ray.kill`` the actor (no restart); monitors see ``reason``. Returns at once: the
        watcher reports once Ray confirms the death (see :meth:`join`)."""
        with self._lock:
            if self._kill_reason is None and not self._monitors.exited:
                self._kill_reason = reason
        ray.kill(self._actor, no_restart=True)

    # -- ActorRef: messaging half --------------------------------------------------------

    def tell(self, message: Any) -> None:
        with self._lock:
            if self._dead:
                raise ActorDeadError(f"{self} not found")
            self._actor.handle.remote(TELL, message)

    def ask(self, message: Any, *, block: bool = True, timeout: float | None = None) -> Any:
        future = self._request(ASK, message)
        return future.get(timeout=timeout) if block else future

    def proxy(self) -> ProcessActorProxy:
        """The process kind's proxy serves here too: it needs only ``_attrs``, ``_request``,
        ``_opts.start_timeout`` and ``ask``, which this ref offers with the same meaning."""
        if self._dead:
            raise ActorDeadError(f"{self} not found")
        return ProcessActorProxy(self, ())

    def _request(self, op: int, message: Any) -> ThreadingFuture[Any]:
        future: ThreadingFuture[Any] = ThreadingFuture()
        with self._lock:
            if self._dead:
                fail(future, ActorDeadError(f"{self} not found"))
                return future
            ref = self._actor.handle.remote(op, message)
            key = id(future)
            self._pending[key] = future
            self._replies[key] = ref
        ref.future().add_done_callback(lambda done: self._complete(key, done))
        return future

    def _complete(self, key: int, done: Future[Any]) -> None:
        """Runs in Ray's callback thread: only settles the pykka future."""
        with self._lock:
            future = self._pending.pop(key, None)
            self._replies.pop(key, None)
        if future is None:
            return  # already failed by the watcher
        exc = done.exception()
        if exc is None:
            ok, value = done.result()
            if ok:
                future.set(value)
            else:
                fail(future, value)
        elif isinstance(exc, RayActorError):
            fail(future, ActorDeadError(f"{self} exited before replying: {exc}"))
        elif isinstance(exc, RayTaskError):  # e.g. a reply Ray could not serialize
            fail(future, exc.as_instanceof_cause())
        else:
            fail(future, exc)

    # -- the actor's life, seen from here ------------------------------------------------

    def _await_start(self, payload: bytes) -> dict[tuple[str, ...], Any]:
        """Wait for Ray to place the actor and for ``on_start``; raise its error if it failed."""
        ready = self._actor.start.remote(payload)
        try:
            ok, value, self._pid = ray.get(ready, timeout=self._opts.start_timeout)
        except GetTimeoutError:
            self._abandon()
            raise TimeoutError(
                f"{self} did not start within {self._opts.start_timeout} s "
                f"(does the Ray cluster have {self._opts.num_cpus} free CPUs?)"
            ) from None
        except RayError as exc:
            self._abandon()
            raise ActorDeadError(f"{self} died while starting: {exc}") from exc
        if not ok:
            self._abandon()
            raise value
        return value

    def _abandon(self) -> None:
        self._dead = True
        ray.kill(self._actor, no_restart=True)

    def _watch(self) -> None:
        """Wait (blocked in Ray, no polling) for the behaviour to end or the process to die."""
        ready, _ = ray.wait([self._exit_ref, self._death_ref], num_returns=1)
        reason: Reason
        try:
            how, crash = ray.get(ready[0])
        except RayActorError as exc:  # died before ending: ray.kill, kill -9, node lost
            reason = self._kill_reason if self._kill_reason is not None else exc
        else:
            with self._lock:
                self._dead = True  # refuse new messages while the process is being ended
            self._deliver_sent_replies()
            ray.kill(self._actor, no_restart=True)
            ray.wait([self._death_ref], num_returns=1)  # returns once Ray confirms the death
            if how == CRASHED:
                reason = crash
            else:
                reason = self._stop_reason if self._stop_reason is not None else NORMAL
        self._finish(reason)

    def _deliver_sent_replies(self) -> None:
        """The behaviour ended (stop, crash): let the replies it had sent reach their askers
        before the process is killed, which would fail them. The reply to the message that
        crashed it carries the crash, and the asker must get that, not "actor died". Bounded:
        asks the behaviour never answered are failed by :meth:`_finish`."""
        with self._lock:
            replies = dict(self._replies)
        if not replies:
            return
        ready, _ = ray.wait(list(replies.values()), num_returns=len(replies), timeout=REPLY_GRACE)
        sent = {key for key, ref in replies.items() if ref in ready}
        deadline = time.monotonic() + REPLY_GRACE
        while time.monotonic() < deadline:  # their done-callbacks run in Ray's thread
            with self._lock:
                if not sent & self._pending.keys():
                    return
            time.sleep(0.001)

    def _finish(self, reason: Reason) -> None:
        with self._lock:
            self._dead = True
            self._replies.clear()
            pending, self._pending = self._pending, {}
        self._report_exit(pending.values(), reason)


def start(actor_class: type[pykka.Actor], *args: Any, **kwargs: Any) -> RayActorRef:
    """Start ``actor_class(*args, **kwargs)`` as a Ray actor; return once it is constructed.

    Needs a connected Ray (``ray.init``, or :func:`supervision.ray.connect`). Options come from
    the class attribute ``ray_options`` (a :class:`RayOptions`). Raises the constructor's or
    ``on_start``'s exception if either fails.
    """
    if not ray.is_initialized():
        raise RuntimeError("kind='ray' needs a connected Ray: call supervision.ray.connect() first")
    opts = getattr(actor_class, "ray_options", None) or RayOptions()
    return RayActorRef(actor_class, args, kwargs, opts)
