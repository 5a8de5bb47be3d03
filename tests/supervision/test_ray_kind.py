"""The 'ray' actor kind behind the ActorHandle protocol: messages, let-it-crash, stop, kill,
kill -9 (Ray's reason reported), and a supervisor restarting a Ray child."""

from __future__ import annotations

import os
import signal
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pykka
import pytest

pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'otpnn[ray]'")

from ray import cloudpickle

from supervision import Actor, ChildSpec, Supervisor, spawn
from supervision.reasons import KILLED, NORMAL, shutdown

# Ray workers cannot import this test module: its actor classes travel by value.
cloudpickle.register_pickle_by_value(sys.modules[__name__])


@pytest.fixture(scope="module", autouse=True)
def ray_cluster() -> Iterator[None]:
    """The session's local Ray (started here if no other Ray test started it first)."""
    sys.path.insert(0, str(Path(__file__).parent.parent / "otpnn" / "ray"))
    from ray_session import local_ray

    with local_ray():
        yield


class Recorder(Actor):
    def __init__(self, base: int) -> None:
        super().__init__()
        self.base = base
        self.seen: list[object] = []

    def on_receive(self, message: object) -> object:
        if message == "crash":
            raise ValueError("asked to crash")
        if message == "seen":
            return self.seen
        if message == "sleep":
            time.sleep(30)
        self.seen.append(message)
        return None

    def add(self, n: int) -> int:
        return self.base + n

    def pid(self) -> int:
        return os.getpid()


class FailsToStart(Actor):
    def on_start(self) -> None:
        raise RuntimeError("no start today")


def test_messages_arrive_in_order_and_proxy_calls_run_remotely() -> None:
    ref = spawn(Recorder, 10, kind="ray")
    try:
        for i in range(100):
            ref.tell(i)
        assert ref.ask("seen", timeout=10) == list(range(100))
        assert ref.proxy().add(5).get(timeout=10) == 15
        assert ref.proxy().pid().get(timeout=10) == ref.pid != os.getpid()
        assert ref.kind == "ray"
        assert ref.is_alive()
    finally:
        assert ref.stop(timeout=10)
    assert ref.exit_reason == NORMAL
    assert not ref.is_alive()


def test_a_crash_reaches_the_asker_and_the_monitors() -> None:
    ref = spawn(Recorder, 0, kind="ray")
    downs = []
    ref.monitor(downs.append)
    with pytest.raises(ValueError, match="asked to crash"):
        ref.ask("crash", timeout=10)
    assert ref.join(10)
    assert isinstance(downs[0].reason, ValueError)
    with pytest.raises(pykka.ActorDeadError):
        ref.tell("late")


def test_stop_reports_its_reason_and_start_failures_raise() -> None:
    ref = spawn(Recorder, 0, kind="ray")
    assert ref.stop(timeout=10, reason=shutdown("bye"))
    assert ref.exit_reason == ("shutdown", "bye")
    with pytest.raises(RuntimeError, match="no start today"):
        spawn(FailsToStart, kind="ray")


def test_kill_fails_pending_asks_and_reports_killed() -> None:
    ref = spawn(Recorder, 0, kind="ray")
    pending = ref.ask("sleep", block=False)
    ref.kill()
    assert ref.join(10)
    assert ref.exit_reason == KILLED
    with pytest.raises(pykka.ActorDeadError):
        pending.get(timeout=10)


def test_sigkill_is_detected_with_rays_reason_within_seconds() -> None:
    ref = spawn(Recorder, 0, kind="ray")
    started = time.monotonic()
    os.kill(ref.pid, signal.SIGKILL)
    assert ref.join(10)
    assert time.monotonic() - started < 5
    assert type(ref.exit_reason).__name__ == "ActorDiedError"
    assert "worker process has died" in str(ref.exit_reason)


def test_supervisor_restarts_a_dead_ray_child() -> None:
    sup = Supervisor.start_link([ChildSpec.actor("r", Recorder, 1, kind="ray")])
    try:
        first = sup.which_children()[0]
        assert first.kind == "ray"
        os.kill(first.pid, signal.SIGKILL)
        deadline = time.monotonic() + 20
        while (info := sup.which_children()[0]).pid in (first.pid, None):
            assert time.monotonic() < deadline, "no restart"
            time.sleep(0.02)
        assert info.restarts == 1
        assert info.ref.proxy().add(1).get(timeout=10) == 2
    finally:
        sup.stop(timeout=20)
