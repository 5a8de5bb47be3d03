"""The supervision rules, run for thread and process children alike (the kind is the only
difference a user sees), plus the deaths only a process can die: SIGKILL, SIGSTOP."""

from __future__ import annotations

import contextlib
import os
import signal
import time
from pathlib import Path
from typing import Any

import pykka
import pytest

from supervision import SHUTDOWN, Actor, ChildSpec, Supervisor
from supervision.process import DeadlineExceeded, ProcessOptions
from supervision.reasons import KilledBySignal

pytestmark = pytest.mark.usefixtures("no_fd_leaks")

KINDS = ["thread", "process"]


class Crash(Exception):
    pass


class FileWorker(Actor):
    """Appends its lifecycle to a file: the one event log threads and processes can share."""

    def __init__(self, name: str, log: str) -> None:
        super().__init__()
        self.name = name
        self.log = log

    def _record(self, what: str) -> None:
        with open(self.log, "a") as f:
            f.write(f"{what} {self.name}\n")

    def on_start(self) -> None:
        self._record("start")

    def on_stop(self) -> None:
        self._record("stop")

    def on_receive(self, message: Any) -> Any:
        if message == "crash":
            raise Crash(self.name)
        if isinstance(message, tuple) and message[0] == "sleep":
            time.sleep(message[1])
        return ("pong", self.name, os.getpid())


class HungIsFailureWorker(FileWorker):
    process_options = ProcessOptions(ask_deadline_is_failure=True)


@pytest.fixture
def log(tmp_path: Path) -> Path:
    path = tmp_path / "events"
    path.touch()
    return path


def events(log: Path) -> list[tuple[str, str]]:
    return [tuple(line.split()) for line in log.read_text().splitlines()]  # type: ignore[misc]


def clear(log: Path) -> None:
    log.write_text("")


def specs(log: Path, kind: str, *names: str, cls: type = FileWorker, **opts: Any) -> list:
    return [ChildSpec.actor(n, cls, n, str(log), kind=kind, **opts) for n in names]


def ref_of(sup: Supervisor, child_id: str) -> Any:
    return next(c.ref for c in sup.which_children() if c.id == child_id)


def crash(ref: Any, sup: Supervisor) -> None:
    with contextlib.suppress(Crash):
        ref.ask("crash", timeout=5)
    assert ref.join(5)
    sup.count_children()  # answered only after the supervisor handled the DOWN


@pytest.mark.parametrize("kind", KINDS)
def test_start_in_order_stop_in_reverse(log: Path, kind: str) -> None:
    sup = Supervisor.start_link(specs(log, kind, "a", "b", "c"))
    refs = [c.ref for c in sup.which_children()]
    assert {r.kind for r in refs} == {kind}
    assert sup.stop(timeout=10)
    assert events(log) == [("start", n) for n in "abc"] + [("stop", n) for n in "cba"]
    assert all(r.exit_reason == SHUTDOWN for r in refs)


@pytest.mark.parametrize("kind", KINDS)
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
def test_strategies_restart_in_order(log: Path, kind: str, strategy: str, expected: list) -> None:
    sup = Supervisor.start_link(specs(log, kind, "a", "b", "c"), strategy=strategy)
    old = {c.id: c.ref for c in sup.which_children()}
    clear(log)
    crash(old["b"], sup)
    assert isinstance(old["b"].exit_reason, Crash)
    assert events(log) == expected
    new = {c.id: c.ref for c in sup.which_children()}
    assert {i for i in "abc" if new[i] is not old[i]} == {n for w, n in expected if w == "start"}
    assert all(r.ask("ping", timeout=5)[0] == "pong" for r in new.values())
    sup.stop(timeout=10)


@pytest.mark.parametrize("kind", KINDS)
def test_intensity_exceeded_stops_everything_and_escalates(log: Path, kind: str) -> None:
    sup = Supervisor.start_link(specs(log, kind, "a", "b"), max_restarts=2, max_seconds=60)
    b = ref_of(sup, "b")
    for _ in range(2):
        crash(ref_of(sup, "a"), sup)
    clear(log)
    ref_of(sup, "a").tell("crash")  # the third restart within 60 s: one too many
    assert sup.join(10)
    assert sup.exit_reason == SHUTDOWN
    assert b.exit_reason == SHUTDOWN
    assert events(log) == [("stop", "b")]


def test_sigkill_from_outside_is_detected_and_restarted(log: Path) -> None:
    sup = Supervisor.start_link(specs(log, "process", "w"))
    old = ref_of(sup, "w")
    pending = old.ask(("sleep", 30), block=False)
    os.kill(old.pid, signal.SIGKILL)
    with pytest.raises(pykka.ActorDeadError):
        pending.get(timeout=2)
    assert old.join(2)
    assert isinstance(old.exit_reason, KilledBySignal)
    deadline = time.monotonic() + 5
    while (new := ref_of(sup, "w")) is old and time.monotonic() < deadline:
        time.sleep(0.01)
    assert new.pid != old.pid
    assert new.ask("ping", timeout=5) == ("pong", "w", new.pid)
    assert sup.stop(timeout=10)


def test_sigstopped_child_misses_its_deadline_is_killed_and_restarted(log: Path) -> None:
    sup = Supervisor.start_link(specs(log, "process", "w", cls=HungIsFailureWorker))
    old = ref_of(sup, "w")
    os.kill(old.pid, signal.SIGSTOP)
    with pytest.raises(pykka.Timeout):
        old.ask("ping", timeout=0.3)
    assert old.join(2)
    assert isinstance(old.exit_reason, DeadlineExceeded)
    sup.count_children()
    new = ref_of(sup, "w")
    assert new is not old
    assert new.ask("ping", timeout=5)[0] == "pong"
    assert sup.stop(timeout=10)


def test_hung_child_is_killed_when_its_shutdown_time_runs_out(log: Path) -> None:
    sup = Supervisor.start_link(specs(log, "process", "w", shutdown=0.3))
    ref = ref_of(sup, "w")
    os.kill(ref.pid, signal.SIGSTOP)
    t0 = time.monotonic()
    assert sup.stop(timeout=10)
    assert time.monotonic() - t0 < 3
    assert ref.exit_reason == "killed"
    assert events(log) == [("start", "w")]  # no on_stop: it never ran again


def test_thread_and_process_children_share_one_tree(log: Path) -> None:
    sup = Supervisor.start_link(
        specs(log, "thread", "t") + specs(log, "process", "p"), strategy="one_for_all"
    )
    assert [c.ref.kind for c in sup.which_children()] == ["thread", "process"]
    crash(ref_of(sup, "p"), sup)
    assert all(c.ref.is_alive() for c in sup.which_children())
    assert events(log)[-2:] == [("start", "t"), ("start", "p")]
    assert sup.stop(timeout=10)
