"""Thread actors with OTP semantics: the :class:`Actor` base class and its :class:`ThreadActorRef`.

Subclass :class:`Actor` exactly as you would ``pykka.ThreadingActor`` (``on_start``,
``on_receive``, proxy methods, ``on_stop``, ``on_failure``). Differences from plain Pykka, all
on purpose:

- **Let it crash.** An exception escaping any handler (tell, ask or proxy call) crashes the actor,
  as an exception in a GenServer callback does: the asker gets the exception, ``on_failure``
  runs, and monitors see the exception as the exit reason. (Pykka keeps the actor alive after a
  failed ask; a supervisor could then never restart it into a known state.)
- **Synchronous start.** :meth:`Actor.start` returns once ``on_start`` has run, and raises its
  exception if it failed, like ``gen_server:start_link`` waiting for ``init/1``. A supervisor
  therefore sees a failed start as a start error, not as a crash right after a start.
- **No lost asks.** The ref tracks every pending future and fails it with
  ``pykka.ActorDeadError`` when the actor exits, whatever the cause. Pykka has a race in which an
  ask put in the inbox while the actor is tearing down is never answered: here sending and
  exiting take the same lock, so an ask is either in the pending set or refused.
- **Exit reasons and monitors** (:class:`~supervision.refs.ActorHandle`): stop with a reason,
  ``kill()``, ``join()``, ``monitor()``.

What Python cannot do: a thread cannot be killed. :meth:`ThreadActorRef.kill` marks the actor
dead at once (pending asks fail, monitors are told ``killed``, it leaves the registry, new
messages are refused) so that a supervisor can move on, but the thread itself runs until the
handler it is in returns; it then exits without running ``on_stop``. A handler that never
returns keeps its thread forever: use process actors for code that may hang.

Only the thread runner lives here (``_actor_loop`` and the ref). The behaviour itself is plain
Pykka (``_handle_receive``), so the same subclass runs unchanged under the process kind.
"""

from __future__ import annotations

import contextlib
import queue
import threading
from dataclasses import dataclass
from itertools import count
from typing import Any, ClassVar, Literal, cast

import pykka
import structlog
from pykka import ActorDeadError, ActorRegistry, ThreadingFuture, messages
from pykka._envelope import Envelope

from supervision.reasons import KILLED, NORMAL, Reason, describe
from supervision.refs import MonitoredHandle, MonitorSet, fail

log = structlog.get_logger("supervision")

_thread_ids = count(1)


@dataclass(frozen=True)
class _Stop:
    """Stop after the messages already in the inbox, exiting with ``reason``."""

    reason: Reason


@dataclass(frozen=True)
class Crash:
    """Message that makes any supervised actor crash with ``reason``, as ``erlang:exit(Pid,
    Reason)`` would: a way to inject a failure from outside (fault injection, tests).

    Unlike an exit signal it is queued behind the messages already in the inbox.
    """

    reason: BaseException


class _Wake:
    """Unblocks a killed actor's ``inbox.get()`` so that its thread can leave."""


class ThreadActorRef(MonitoredHandle, pykka.ActorRef[Any]):
    """A Pykka ``ActorRef`` that also implements :class:`~supervision.refs.ActorHandle`."""

    kind: ClassVar[Literal["thread"]] = "thread"

    def __init__(self, actor: Actor) -> None:
        super().__init__(actor)
        self._lock = threading.Lock()
        self._pending: set[ThreadingFuture[Any]] = set()
        self._dead = False
        self._killed = False
        self._monitors = MonitorSet()
        self._thread: threading.Thread | None = None
        self._started = threading.Event()  # on_start returned, or the actor died first
        self._start_succeeded = False  # on_start returned: a stop right after it is an exit
        self.stop_requested = threading.Event()
        """Set by :meth:`stop`: a long handler may poll it to return early and let the stop in."""

    # -- ActorHandle: supervision half -------------------------------------------------

    @property
    def pid(self) -> None:
        return None

    def is_alive(self) -> bool:
        return not self._dead

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the exit to be reported, then (unless killed) for the thread to end."""
        if threading.current_thread() is self._thread:
            return self._monitors.exited
        if not self._monitors.wait(timeout):
            return False
        thread = self._thread
        if thread is not None and not self._killed:
            thread.join(timeout)  # it has only to return from _actor_loop
            return not thread.is_alive()
        return True

    # ActorHandle.stop returns whether the actor exited, for every kind, where pykka's overloads
    # return a Future for block=False: a deliberate difference of the supervision API.
    def stop(  # type: ignore[override]  # a bool, as ActorHandle.stop, not pykka's Future
        self, block: bool = True, timeout: float | None = None, *, reason: Reason = NORMAL
    ) -> bool:
        """Stop after the messages already sent, running ``on_stop``; exit with ``reason``.

        Returns True once the actor has exited, False if ``timeout`` ran out first (then the
        caller may :meth:`kill` it). Called from the actor's own thread it never blocks.
        """
        with self._lock:
            if not self._dead:
                self.stop_requested.set()
                self.actor_inbox.put(Envelope(_Stop(reason)))
        if not block:
            return self._monitors.exited
        return self.join(timeout)

    def kill(self, reason: Reason = KILLED) -> None:
        """Mark the actor dead now, without ``on_stop``; monitors see ``reason``.

        The thread cannot be forced: it leaves when its current handler returns.
        """
        with self._lock:
            if self._dead:
                return
            self._killed = True
        self.actor_inbox.put(Envelope(_Wake()))
        self._finish(reason)

    # -- ActorRef: messaging half ------------------------------------------------------

    def tell(self, message: Any) -> None:
        with self._lock:
            if self._dead:
                raise ActorDeadError(f"{self} not found")
            self.actor_inbox.put(Envelope(message))

    def ask(self, message: Any, *, block: bool = True, timeout: float | None = None) -> Any:
        future: ThreadingFuture[Any] = ThreadingFuture()
        with self._lock:
            if self._dead:
                fail(future, ActorDeadError(f"{self} not found"))
            else:
                self._pending.add(future)
                self.actor_inbox.put(Envelope(message, reply_to=future))
        return future.get(timeout=timeout) if block else future

    # -- called by the actor's thread --------------------------------------------------

    def _reply(self, envelope: Envelope[Any], value: Any, error: BaseException | None) -> None:
        future = envelope.reply_to
        if future is None:
            return
        with self._lock:
            self._pending.discard(future)
        # A kill() may have failed it already: the first answer stands.
        with contextlib.suppress(queue.Full):
            if error is None:
                future.set(value)
            else:
                fail(future, error)

    def _finish(self, reason: Reason) -> None:
        """The actor has exited: refuse messages, fail pending asks, tell the monitors."""
        with self._lock:
            self._dead = True
            pending, self._pending = self._pending, set()
        self.actor_stopped.set()
        self._started.set()
        ActorRegistry.unregister(self)
        self._report_exit(pending, reason)

    def _wait_started(self, timeout: float) -> None:
        """Block until ``on_start`` returned; raise its exception if it failed."""
        if not self._started.wait(timeout):
            self.kill()
            raise TimeoutError(f"{self} did not finish on_start within {timeout} s")
        if self._dead and not self._start_succeeded:
            self.join(timeout)
            reason = self.exit_reason
            if isinstance(reason, BaseException):
                raise reason
            why = describe(reason) if reason is not None else "no reason"
            raise ActorDeadError(f"{self} exited while starting ({why})")


class Actor(pykka.ThreadingActor):
    """Base class for actors under supervision (thread or process kind).

    ``start_timeout`` bounds how long :meth:`start` waits for ``on_start``.
    """

    start_timeout: ClassVar[float] = 30.0
    ref_class: ClassVar[type[ThreadActorRef]] = ThreadActorRef

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._actor_ref = self.ref_class(self)

    @property
    def actor_ref(self) -> ThreadActorRef:
        return cast(ThreadActorRef, self._actor_ref)  # made by ref_class in __init__

    @classmethod
    def start(cls, *args: Any, **kwargs: Any) -> ThreadActorRef:
        """Start the actor in a new thread; return its ref once ``on_start`` has succeeded."""
        ref = super().start(*args, **kwargs)
        assert isinstance(ref, ThreadActorRef)  # pykka returns our actor_ref
        ref._wait_started(cls.start_timeout)
        return ref

    def _handle_receive(self, message: Any) -> Any:
        if isinstance(message, Crash):
            raise message.reason
        return super()._handle_receive(message)

    def stop(self) -> None:
        """Stop this actor with reason ``normal`` after the messages already in its inbox."""
        self.actor_ref.stop(block=False)

    # -- the thread runner ---------------------------------------------------------------

    def _start_actor_loop(self) -> None:
        thread = threading.Thread(
            target=self._actor_loop,
            name=f"{type(self).__name__}-actor-{next(_thread_ids)}",
            daemon=self.use_daemon_thread,
        )
        self.actor_ref._thread = thread
        thread.start()

    def _actor_loop(self) -> None:
        try:
            reason = self._run()
        except BaseException as exc:  # a hook or a log line failed on the way out (a closed
            reason = exc  # stderr, say): the exit must still reach the monitors, or they wait
        self.actor_ref._finish(reason)

    def _run(self) -> Reason:
        """Run hooks and messages; return the exit reason."""
        ref = self.actor_ref
        try:
            self.on_start()
        except BaseException as exc:
            return self._crash(exc)
        ref._start_succeeded = True
        ref._started.set()
        while True:
            envelope = self.actor_inbox.get()
            if ref._killed:
                self._on_killed()
                return KILLED  # already reported by kill(); ignored by _finish
            message = envelope.message
            if isinstance(message, _Stop | messages._ActorStop):
                try:
                    self.on_stop()
                except BaseException as exc:
                    return self._crash(exc)
                ref._reply(envelope, None, None)
                return message.reason if isinstance(message, _Stop) else NORMAL
            try:
                result = self._handle_receive(message)
            except BaseException as exc:
                ref._reply(envelope, None, exc)
                return self._crash(exc)
            ref._reply(envelope, result, None)

    def _crash(self, exc: BaseException) -> BaseException:
        """Let it crash: run ``on_failure`` and make the exception the exit reason."""
        log.warning("actor_crashed", actor=str(self), reason=describe(exc), exc_info=exc)
        try:
            self.on_failure(type(exc), exc, exc.__traceback__)
        except Exception as hook_exc:
            exc.add_note(f"on_failure raised too: {type(hook_exc).__name__}: {hook_exc}")
        return exc

    def _on_killed(self) -> None:
        """Runs in the actor's thread once it notices it was killed (thread kind only).

        A supervisor overrides it to kill its children, as an exit signal would through links.
        """
