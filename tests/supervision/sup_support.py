"""Actors and helpers shared by the supervision tests."""

from __future__ import annotations

import contextlib
from typing import Any

import pykka

from supervision import Actor, ActorHandle


class Crash(Exception):
    """The exception test workers crash with."""


class FakeClock:
    """An injectable monotonic clock that only moves when told."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Worker(Actor):
    """Records start/stop in ``events``; crashes, exits or blocks on request."""

    def __init__(
        self, name: str = "w", events: list[Any] | None = None, fail_start: bool = False
    ) -> None:
        super().__init__()
        self.name = name
        self.events = events if events is not None else []
        self.fail_start = fail_start

    def on_start(self) -> None:
        if self.fail_start:
            raise Crash(f"{self.name} cannot start")
        self.events.append(("start", self.name))

    def on_stop(self) -> None:
        self.events.append(("stop", self.name))

    def on_receive(self, message: Any) -> Any:
        if message == "crash":
            raise Crash(self.name)
        if message == "exit":
            self.stop()
            return None
        if isinstance(message, tuple) and message[0] == "block":
            message[1].wait(10)
            return "unblocked"
        return ("pong", self.name)

    def boom(self) -> None:
        raise Crash(f"{self.name} via proxy")


def crash(handle: ActorHandle, sup: Any = None) -> None:
    """Crash a child and wait until its exit has been reported to its monitors; with ``sup``,
    also until that supervisor has handled it (an ask is answered after the DOWN before it),
    so that a fake clock moved afterwards cannot move under the restart."""
    with contextlib.suppress(Crash):
        handle.ask("crash", timeout=5)
    assert handle.join(5)
    if sup is not None:
        sync(sup)


def sync(sup: Any) -> None:
    """Return once ``sup`` has handled every message sent to it before (or has exited)."""
    with contextlib.suppress(pykka.ActorDeadError):
        sup.count_children()


def exit_normally(handle: ActorHandle) -> None:
    handle.tell("exit")
    assert handle.join(5)


def child_ref(sup: Any, child_id: Any) -> ActorHandle:
    ref = next(c.ref for c in sup.which_children() if c.id == child_id)
    assert ref is not None
    return ref
