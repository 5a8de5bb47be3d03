"""The remote side of a Ray actor: :class:`RayRunner`, a Ray actor that owns one behaviour.

Like :mod:`supervision.process.runner`, it constructs the actor class in its own process and
dispatches every message through Pykka's ``Actor._handle_receive``, so proxy calls and
``on_receive`` behave exactly as in a thread actor; exceptions are sent back in portable form.

Two concurrency groups, because a Ray actor cannot be told apart "idle" from "dead" otherwise:

- the default group (one thread, so messages from one submitter run in submission order) runs
  ``start``, ``handle`` and ``stop``;
- the ``exit`` group runs two calls the parent keeps outstanding for the actor's whole life:
  ``exit_record`` returns how the behaviour ended (stopped, or crashed with which exception:
  a crash in a tell has no asker to carry it), ``until_killed`` never returns, so its ref fails
  exactly when Ray declares the actor dead (process killed, node lost).

The runner never ends its own process (``exit_actor`` waits for the ``exit`` group, which never
finishes): the parent kills it with ``ray.kill`` once it has the record.
"""

from __future__ import annotations

import os
import pickle
import threading
from typing import Any

import ray
from pykka import ActorDeadError

from supervision.process.errors import portable
from supervision.process.runner import ASK, INTROSPECT, introspect

STOPPED, CRASHED = "stopped", "crashed"
EXIT_GROUP = "exit"


class RayRunner:
    def __init__(self, urn: str) -> None:
        self._urn = urn
        self._actor: Any = None
        self._ended = threading.Event()
        self._record: tuple[str, BaseException | None] | None = None
        self._never = threading.Event()

    def start(self, payload: bytes) -> tuple[bool, Any, int]:
        """Construct the actor and run ``on_start``: ``(True, introspection, pid)`` or
        ``(False, exception, pid)``. ``payload`` is the pickled ``(class, args, kwargs)``."""
        try:
            actor_class, args, kwargs = pickle.loads(payload)
            actor = actor_class(*args, **kwargs)
            actor.actor_urn = self._urn
        except Exception as exc:
            err = portable(exc)
            self._end(CRASHED, err)
            return False, err, os.getpid()
        try:
            actor.on_start()
        except Exception as exc:
            err = portable(exc)
            self._crash(actor, exc, err)
            return False, err, os.getpid()
        self._actor = actor
        return True, introspect(actor), os.getpid()

    def handle(self, op: int, message: Any) -> tuple[bool, Any]:
        """One tell, ask or introspection; ``(ok, value)`` (never raises: a crash is recorded
        for the parent and the asker gets the exception as a value)."""
        if self._ended.is_set():
            return False, ActorDeadError(f"actor {self._urn} has exited")
        if op == INTROSPECT:
            return True, introspect(self._actor)
        try:
            result = self._actor._handle_receive(message)
        except Exception as exc:
            err = portable(exc)
            self._crash(self._actor, exc, err)
            return False, (err if op == ASK else None)
        return True, result

    def stop(self) -> None:
        """Run ``on_stop`` after the messages sent before; the parent then kills the process."""
        if self._ended.is_set():
            return
        try:
            self._actor.on_stop()
        except Exception as exc:
            self._crash(self._actor, exc, portable(exc))
            return
        self._end(STOPPED, None)

    @ray.method(concurrency_group=EXIT_GROUP)
    def exit_record(self) -> tuple[str, BaseException | None]:
        self._ended.wait()
        assert self._record is not None
        return self._record

    @ray.method(concurrency_group=EXIT_GROUP)
    def until_killed(self) -> None:
        self._never.wait()

    def _crash(self, actor: Any, exc: Exception, err: BaseException) -> None:
        """Let it crash: ``on_failure`` here, the reason to the parent, no further message."""
        try:
            actor.on_failure(type(exc), exc, exc.__traceback__)
        except Exception as hook_exc:
            err.add_note(f"on_failure raised too: {type(hook_exc).__name__}: {hook_exc}")
        self._end(CRASHED, err)

    def _end(self, how: str, reason: BaseException | None) -> None:
        if not self._ended.is_set():
            self._record = (how, reason)
            self._ended.set()
