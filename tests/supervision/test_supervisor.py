"""Supervisors with real thread actors: one test per OTP rule."""

from __future__ import annotations

import threading
import time

import pykka
import pytest
from structlog.testing import capture_logs
from sup_support import Crash, FakeClock, Worker, child_ref, crash, exit_normally

from supervision import (
    KILLED,
    SHUTDOWN,
    Backoff,
    ChildAlreadyPresentError,
    ChildNotFoundError,
    ChildRunningError,
    ChildSpec,
    DynamicSupervisor,
    MaxChildrenError,
    Registry,
    StartChildError,
    Supervisor,
)


def specs(events: list, *names: str, **options) -> list[ChildSpec]:
    return [ChildSpec.actor(n, Worker, n, events, **options) for n in names]


@pytest.fixture
def events() -> list:
    return []


def test_children_start_in_order_and_stop_in_reverse(events: list) -> None:
    sup = Supervisor.start_link(specs(events, "a", "b", "c"))
    assert [c.id for c in sup.which_children()] == ["a", "b", "c"]
    assert sup.stop(timeout=5)
    assert events == [("start", n) for n in "abc"] + [("stop", n) for n in "cba"]


@pytest.mark.parametrize(
    ("strategy", "expected"),
    [
        ("one_for_one", [("start", "b")]),
        (
            "one_for_all",
            [("stop", "c"), ("stop", "a"), ("start", "a"), ("start", "b"), ("start", "c")],
        ),
        ("rest_for_one", [("stop", "c"), ("start", "b"), ("start", "c")]),
    ],
)
def test_strategies_restart_the_right_children_in_order(
    events: list, strategy: str, expected: list
) -> None:
    sup = Supervisor.start_link(specs(events, "a", "b", "c"), strategy=strategy)
    old = {c.id: c.ref for c in sup.which_children()}
    events.clear()
    crash(old["b"])
    new = {c.id: c.ref for c in sup.which_children()}
    assert events == expected
    restarted = {cid for cid in "abc" if new[cid] is not old[cid]}
    assert restarted == {name for what, name in expected if what == "start"}
    assert all(ref.is_alive() for ref in new.values())
    sup.stop(timeout=5)


def test_group_restart_counts_once_against_intensity(events: list) -> None:
    clock = FakeClock()
    sup = Supervisor.start_link(
        specs(events, "a", "b", "c"), strategy="one_for_all", max_restarts=2, clock=clock
    )
    crash(child_ref(sup, "a"))
    crash(child_ref(sup, "b"))  # 2 group restarts of 3 children each: still within 2
    assert sup.count_children()["active"] == 3
    crash(child_ref(sup, "c"))
    assert sup.join(5)
    assert sup.exit_reason == SHUTDOWN


def test_transient_restarts_only_on_abnormal_exit_and_temporary_never(events: list) -> None:
    sup = Supervisor.start_link(
        [
            ChildSpec.actor("t", Worker, "t", events, restart="transient"),
            ChildSpec.actor("tmp", Worker, "tmp", events, restart="temporary"),
        ]
    )
    exit_normally(child_ref(sup, "t"))
    assert [(c.id, c.status) for c in sup.which_children()] == [
        ("t", "undefined"),
        ("tmp", "running"),
    ]
    sup.restart_child("t")
    crash(child_ref(sup, "t"))
    assert next(c for c in sup.which_children() if c.id == "t").status == "running"
    crash(child_ref(sup, "tmp"))
    assert [c.id for c in sup.which_children()] == ["t"]  # a temporary child's spec is gone
    sup.stop(timeout=5)


def test_exceeding_intensity_stops_children_and_exits_with_shutdown(events: list) -> None:
    clock = FakeClock()
    sup = Supervisor.start_link(specs(events, "a", "b"), max_restarts=3, max_seconds=5, clock=clock)
    for _ in range(3):
        crash(child_ref(sup, "a"), sup)
        clock.advance(1)
    b = child_ref(sup, "b")
    events.clear()
    with capture_logs() as logs:
        crash(child_ref(sup, "a"))  # the 4th restart within 5 s
        assert sup.join(5)
    assert sup.exit_reason == SHUTDOWN
    assert not b.is_alive()
    assert b.exit_reason == SHUTDOWN
    assert events == [("stop", "b")]
    gave_up = [e for e in logs if e["event"] == "supervisor_gave_up"]
    assert gave_up[0]["child_id"] == "a"
    assert "Crash" in gave_up[0]["reason"]
    assert sup.gave_up is not None
    assert sup.gave_up.child_id == "a"
    assert "intensity" not in sup.gave_up.reason  # the reason is the child's, named plainly
    assert any(e["event"] == "restart_intensity_exceeded" for e in logs)


def test_restarts_outside_the_window_do_not_accumulate(events: list) -> None:
    clock = FakeClock()
    sup = Supervisor.start_link(specs(events, "a"), max_restarts=1, max_seconds=5, clock=clock)
    for _ in range(5):
        crash(child_ref(sup, "a"), sup)
        clock.advance(6)
    assert sup.is_alive()
    assert sup.which_children()[0].restarts == 5
    sup.stop(timeout=5)


def test_which_children_keeps_the_last_exit_reason_across_a_restart(events: list) -> None:
    sup = Supervisor.start_link(specs(events, "a", "b"))
    assert [c.last_reason for c in sup.which_children()] == [None, None]
    crash(child_ref(sup, "a"), sup)
    a, b = sup.tree()
    assert (a["status"], a["restarts"]) == ("running", 1)
    assert a["last_reason"].startswith("Crash")  # what observer shows: why it last exited
    assert b["last_reason"] is None
    sup.stop(timeout=5)


def test_escalation_parent_restarts_a_child_supervisor_that_gave_up(events: list) -> None:
    clock = FakeClock()
    inner = Supervisor.child_spec(
        "inner", specs(events, "x"), max_restarts=0, clock=clock, name="inner"
    )
    root = Supervisor.start_link([*specs(events, "a"), inner], clock=clock, name="root")
    inner_ref = child_ref(root, "inner")
    x = inner_ref.which_children()[0].ref
    crash(x)  # the inner supervisor gives up at once (max_restarts=0)
    assert inner_ref.join(5)
    assert inner_ref.exit_reason == SHUTDOWN
    tree = root.tree()
    assert [(row["id"], row["status"], row["restarts"]) for row in tree] == [
        ("a", "running", 0),
        ("inner", "running", 1),
    ]
    assert tree[1]["children"][0]["status"] == "running"
    root.stop(timeout=5)


def test_root_that_gives_up_leaves_nothing_running(events: list) -> None:
    clock = FakeClock()
    inner = Supervisor.child_spec("inner", specs(events, "x", "y"), max_restarts=0, clock=clock)
    root = Supervisor.start_link([inner], max_restarts=0, clock=clock)
    crash(child_ref(child_ref(root, "inner"), "x"))
    assert root.join(5)
    assert root.exit_reason == SHUTDOWN
    assert root.gave_up.child_id == "inner"
    assert root.gave_up.last_reasons == {"inner": "shutdown"}
    assert ("stop", "y") in events
    assert pykka.ActorRegistry.get_all() == []  # the whole tree is down once the root is


def test_stopping_a_supervisor_stops_the_subtree_before_its_exit_is_reported(
    events: list,
) -> None:
    inner = Supervisor.child_spec("inner", specs(events, "x", "y"))
    root = Supervisor.start_link([*specs(events, "a"), inner, *specs(events, "b")])
    downs = []
    root.monitor(lambda d: downs.append(list(events)))
    root.stop(timeout=5, reason=SHUTDOWN)
    stops = [name for what, name in downs[0] if what == "stop"]
    assert stops == ["b", "y", "x", "a"]


def test_api_mirrors_otp(events: list) -> None:
    sup = Supervisor.start_link(specs(events, "a"))
    b = sup.start_child(ChildSpec.actor("b", Worker, "b", events))
    assert b.ask("ping", timeout=5) == ("pong", "b")
    with pytest.raises(ChildAlreadyPresentError, match="already_started"):
        sup.start_child(ChildSpec.actor("b", Worker))
    with pytest.raises(ChildRunningError):
        sup.restart_child("b")
    with pytest.raises(ChildRunningError):
        sup.delete_child("b")
    sup.terminate_child("b")
    assert not b.is_alive()
    assert b.exit_reason == SHUTDOWN
    assert sup.count_children() == {"specs": 2, "active": 1, "supervisors": 0, "workers": 2}
    with pytest.raises(ChildAlreadyPresentError, match="already_present"):
        sup.start_child(ChildSpec.actor("b", Worker))
    b2 = sup.restart_child("b")
    assert b2 is not b
    assert b2.actor_urn != b.actor_urn
    sup.terminate_child("b")
    sup.delete_child("b")
    assert [c.id for c in sup.which_children()] == ["a"]
    with pytest.raises(ChildNotFoundError):
        sup.terminate_child("nope")
    info = sup.which_children()[0]
    assert (info.type, info.kind, info.pid, info.restarts) == ("worker", "thread", None, 0)
    sup.stop(timeout=5)


def test_a_child_whose_start_raises_is_a_start_error(events: list) -> None:
    bad = ChildSpec.actor("bad", Worker, "bad", events, fail_start=True)
    with pytest.raises(StartChildError, match="'bad' failed to start") as info:
        Supervisor.start_link([*specs(events, "a"), bad, *specs(events, "c")])
    assert isinstance(info.value.reason, Crash)
    assert events == [("start", "a"), ("stop", "a")]  # started ones stopped, c never started
    sup = Supervisor.start_link([])
    with pytest.raises(StartChildError):
        sup.start_child(bad)
    assert sup.which_children() == []
    sup.stop(timeout=5)


def test_child_ignoring_stop_is_killed_after_its_shutdown_time(events: list) -> None:
    gate = threading.Event()
    sup = Supervisor.start_link(specs(events, "slow", shutdown=0.2))
    slow = child_ref(sup, "slow")
    slow.tell(("block", gate))
    with capture_logs() as logs:
        assert sup.stop(timeout=5)
    assert slow.exit_reason == KILLED
    assert any(e["event"] == "child_shutdown_timeout" for e in logs)
    gate.set()


def test_brutal_kill_does_not_run_on_stop(events: list) -> None:
    sup = Supervisor.start_link(specs(events, "a", shutdown="brutal_kill"))
    a = child_ref(sup, "a")
    sup.stop(timeout=5)
    assert a.exit_reason == KILLED
    assert ("stop", "a") not in events


def test_registry_finds_the_current_incarnation_after_restarts(events: list) -> None:
    registry = Registry()
    sup = Supervisor.start_link(
        [ChildSpec.actor("a", Worker, "a", events, name="alpha")], registry=registry
    )
    first = registry.whereis("alpha")
    assert first is child_ref(sup, "a")
    crash(first)
    second = child_ref(sup, "a")  # once the supervisor has handled the exit...
    assert registry.whereis("alpha") is second  # ...the name resolves to the new incarnation
    assert second is not None
    assert second is not first
    assert second.ask("ping", timeout=5) == ("pong", "a")
    sup.terminate_child("a")
    assert registry.whereis("alpha") is None
    sup.stop(timeout=5)


def test_backoff_delays_restarts_and_reports_restarting(events: list) -> None:
    sup = Supervisor.start_link(
        specs(events, "a"), backoff=Backoff(min_seconds=0.3, max_seconds=1, jitter=0.1)
    )
    crashed_at = time.monotonic()
    crash(child_ref(sup, "a"))
    assert sup.which_children()[0].status == "restarting"
    with pytest.raises(ChildRunningError):
        sup.restart_child("a")
    while sup.which_children()[0].status != "running":
        assert time.monotonic() - crashed_at < 5
        time.sleep(0.01)
    assert time.monotonic() - crashed_at >= 0.3
    sup.stop(timeout=5)


def test_backoff_timer_is_cancelled_when_the_supervisor_stops(events: list) -> None:
    sup = Supervisor.start_link(specs(events, "a"), backoff=Backoff(min_seconds=5, max_seconds=5))
    crash(child_ref(sup, "a"))
    assert sup.stop(timeout=5)  # the leak check fails if the timer thread survives


def test_lifecycle_events_are_logged_with_supervisor_child_and_reason(events: list) -> None:
    with capture_logs() as logs:
        sup = Supervisor.start_link(specs(events, "a"), name="logged")
        crash(child_ref(sup, "a"))
        sup.stop(timeout=5)
    by_event = {e["event"]: e for e in logs}
    for name in ("child_started", "child_exited", "child_restarted", "child_terminated"):
        assert by_event[name]["supervisor"] == "logged"
        assert by_event[name]["child_id"] == "a"
        assert by_event[name]["kind"] == "thread"
    assert by_event["child_exited"]["reason"] == "Crash: a"
    assert by_event["supervisor_shutdown"]["supervisor"] == "logged"


def test_dynamic_supervisor_starts_children_at_run_time_up_to_max(events: list) -> None:
    dyn = DynamicSupervisor.start_link(max_children=2)
    a = dyn.start_child(ChildSpec.actor("w", Worker, "a", events))
    b = dyn.start_child(ChildSpec.actor("w", Worker, "b", events, restart="transient"))
    with pytest.raises(MaxChildrenError):
        dyn.start_child(ChildSpec.actor("w", Worker, "c", events))
    crash(a)
    refs = [c.ref for c in dyn.which_children()]
    assert len(refs) == 2
    assert a not in refs
    exit_normally(b)  # transient, normal exit: forgotten
    assert len(dyn.which_children()) == 1
    dyn.terminate_child(refs[0])
    assert dyn.count_children()["specs"] == 0
    dyn.stop(timeout=5)


def test_kill_of_a_supervisor_kills_its_children(events: list) -> None:
    sup = Supervisor.start_link(specs(events, "a"))
    a = child_ref(sup, "a")
    sup.kill()
    assert a.join(5)
    assert a.exit_reason == KILLED
