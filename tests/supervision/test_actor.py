"""Thread actors: let it crash, exit reasons, monitors, kill, no lost asks, spawn."""

from __future__ import annotations

import contextlib
import threading
from typing import Any

import pykka
import pytest
from sup_support import Crash, Worker

from supervision import KILLED, NOPROC, NORMAL, SHUTDOWN, Actor, ActorHandle, link, spawn
from supervision.reasons import shutdown


def test_thread_ref_is_an_actor_handle_of_kind_thread() -> None:
    ref = spawn(Worker, "a")
    try:
        assert isinstance(ref, ActorHandle)
        assert ref.kind == "thread"
        assert ref.pid is None
        assert ref.exit_reason is None
        assert ref.ask("ping", timeout=5) == ("pong", "a")
    finally:
        ref.stop(timeout=5)


@pytest.mark.parametrize("how", ["tell", "ask", "proxy"])
def test_exception_in_any_handler_crashes_the_actor(how: str) -> None:
    ref = spawn(Worker, "a")
    downs = []
    ref.monitor(downs.append)
    if how == "tell":
        ref.tell("crash")
    elif how == "ask":
        with pytest.raises(Crash):  # the asker gets the exception...
            ref.ask("crash", timeout=5)
    else:
        with pytest.raises(Crash):
            ref.proxy().boom().get(timeout=5)
    assert ref.join(5)
    assert not ref.is_alive()  # ...and, unlike plain Pykka, the actor is gone
    assert isinstance(ref.exit_reason, Crash)
    assert len(downs) == 1
    assert downs[0].reason is ref.exit_reason
    assert pykka.ActorRegistry.get_by_urn(ref.actor_urn) is None


def test_on_failure_runs_on_crash_and_on_stop_does_not() -> None:
    calls = []

    class Hooked(Actor):
        def on_receive(self, message):
            raise Crash("x")

        def on_failure(self, *exc_info):
            calls.append("failure")

        def on_stop(self):
            calls.append("stop")

    ref = spawn(Hooked)
    ref.tell("go")
    assert ref.join(5)
    assert calls == ["failure"]


def test_stop_reason_is_the_exit_reason_seen_by_monitors() -> None:
    for reason in (NORMAL, SHUTDOWN, shutdown("done")):
        ref = spawn(Worker)
        downs = []
        ref.monitor(downs.append)
        assert ref.stop(timeout=5, reason=reason)
        assert ref.exit_reason == reason
        assert [d.reason for d in downs] == [reason]


def test_monitor_after_exit_gets_noproc_at_once() -> None:
    ref = spawn(Worker)
    ref.stop(timeout=5)
    downs = []
    ref.monitor(downs.append)
    assert [d.reason for d in downs] == [NOPROC]


def test_demonitor_stops_delivery() -> None:
    ref = spawn(Worker)
    downs = []
    ref.demonitor(ref.monitor(downs.append))
    ref.stop(timeout=5)
    assert downs == []


def test_on_start_failure_is_raised_by_spawn() -> None:
    with pytest.raises(Crash, match="cannot start"):
        spawn(Worker, "a", fail_start=True)
    assert pykka.ActorRegistry.get_all() == []


def test_ask_to_a_dying_actor_fails_promptly_never_hangs() -> None:
    gate = threading.Event()
    ref = spawn(Worker)
    blocked = ref.ask(("block", gate), block=False)
    queued = [ref.ask("ping", block=False) for _ in range(20)]
    ref.tell("crash")  # crashes after the pings: they are answered
    after = [ref.ask("ping", block=False) for _ in range(20)]
    gate.set()
    assert blocked.get(timeout=5) == "unblocked"
    assert all(f.get(timeout=5) == ("pong", "w") for f in queued)
    for future in after:
        with pytest.raises(pykka.ActorDeadError):
            future.get(timeout=5)
    assert ref.join(5)
    with pytest.raises(pykka.ActorDeadError):
        ref.ask("ping", timeout=5)
    with pytest.raises(pykka.ActorDeadError):
        ref.tell("ping")


def test_asks_racing_an_exit_are_all_answered() -> None:
    # Many askers while the actor stops: each ask is answered or fails, none waits forever.
    for _ in range(20):
        ref = spawn(Worker)
        futures = []

        def ask_many(ref=ref, futures=futures) -> None:
            for _ in range(50):
                try:
                    futures.append(ref.ask("ping", block=False))
                except pykka.ActorDeadError:
                    return

        asker = threading.Thread(target=ask_many)
        asker.start()
        ref.stop(timeout=5)
        asker.join(5)
        for future in futures:
            with contextlib.suppress(pykka.ActorDeadError):
                assert future.get(timeout=2) == ("pong", "w")


def test_kill_marks_a_stuck_thread_actor_dead_at_once() -> None:
    gate = threading.Event()
    ref = spawn(Worker)
    stuck = ref.ask(("block", gate), block=False)
    pending = ref.ask("ping", block=False)
    assert not ref.stop(timeout=0.1, reason=SHUTDOWN)  # it ignores stop: it is busy
    ref.kill()
    assert ref.join(1)  # reported dead although its thread still runs
    assert ref.exit_reason == KILLED
    with pytest.raises(pykka.ActorDeadError):
        stuck.get(timeout=1)
    with pytest.raises(pykka.ActorDeadError):
        pending.get(timeout=1)
    assert pykka.ActorRegistry.get_all() == []
    gate.set()  # let the thread leave, so that the leak check passes


def test_link_propagates_abnormal_exits_but_not_normal_ones() -> None:
    a, b, c = spawn(Worker, "a"), spawn(Worker, "b"), spawn(Worker, "c")
    link(a, b)
    link(b, c, b_traps_exits=False, a_traps_exits=False)
    a.tell("crash")
    assert c.join(5)
    assert isinstance(b.exit_reason, Crash)
    assert isinstance(c.exit_reason, Crash)

    d, e = spawn(Worker, "d"), spawn(Worker, "e")
    link(d, e)
    d.stop(timeout=5)
    assert e.is_alive()
    e.stop(timeout=5)


def test_trapping_exits_turns_the_exit_into_a_message() -> None:
    got = []

    class Trapper(Actor):
        def on_receive(self, message):
            got.append(message)

    a, t = spawn(Worker, "a"), spawn(Trapper)
    link(a, t, b_traps_exits=True)
    a.tell("crash")
    assert a.join(5)
    t.stop(timeout=5)
    assert len(got) == 1
    assert isinstance(got[0].reason, Crash)


def test_spawn_rejects_unknown_kinds_and_plain_classes() -> None:
    with pytest.raises(ValueError, match="unknown actor kind 'nope'"):
        spawn(Worker, kind="nope")
    with pytest.raises(TypeError, match=r"subclass of supervision\.Actor"):
        spawn(pykka.ThreadingActor)


def test_crash_message_crashes_the_actor_with_its_reason() -> None:
    """``Crash(reason)`` is the analogue of erlang:exit(Pid, Reason): the actor dies with it."""
    from supervision import Crash, spawn

    class Idle(Actor):
        pass

    handle = spawn(Idle)
    boom = RuntimeError("from outside")
    handle.tell(Crash(boom))
    assert handle.join(5)
    assert handle.exit_reason is boom


class _DoneAtOnce(Actor):
    """Starts fine, then stops itself with the first message it sent itself."""

    def on_start(self) -> None:
        self.actor_ref.tell("go")

    def on_receive(self, message: Any) -> Any:
        self.actor_ref.stop(block=False)


def test_an_actor_that_stops_right_after_starting_started() -> None:
    # As with OTP's start_link: once init returned, the start succeeded, even if the actor
    # exits before the caller looks (here, every time: it stops with its first message).
    for _ in range(50):
        ref = spawn(_DoneAtOnce)
        ref.join(5)
        assert ref.exit_reason == NORMAL
