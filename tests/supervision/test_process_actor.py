"""Process actors on their own: the Pykka interface, exit reasons, hangs, orphans, leaks."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pykka
import pytest

from supervision.process import (
    DeadlineExceeded,
    ProcessActorRef,
    ProcessOptions,
    RemoteError,
    start,
)
from supervision.reasons import KILLED, NORMAL, ExitedWithCode, KilledBySignal, shutdown
from supervision.refs import NOPROC, ActorHandle

pytestmark = pytest.mark.usefixtures("no_fd_leaks")

PROMPT = 2.0  # seconds within which a death must be seen


@pykka.traversable
class Counter:
    def __init__(self) -> None:
        self.n = 0

    def bump(self) -> int:
        self.n += 1
        return self.n


class LocalError(Exception):
    """Unpicklable: carries a lock."""

    def __init__(self) -> None:
        super().__init__("cannot cross")
        self.lock = __import__("threading").Lock()


class Echo(pykka.ThreadingActor):
    def __init__(self, base: int = 0, log: str | None = None) -> None:
        super().__init__()
        self.base = base
        self.log = log
        self.counter = Counter()
        self.started_in = None

    def _write(self, line: str) -> None:
        if self.log:
            with open(self.log, "a") as f:
                f.write(line + "\n")

    def on_start(self) -> None:
        self.started_in = os.getpid()
        self._write("start")

    def on_stop(self) -> None:
        self._write("stop")

    def on_failure(self, *exc_info: object) -> None:
        self._write(f"failure {exc_info[0].__name__}")  # type: ignore[union-attr]

    def on_receive(self, message: object) -> object:
        match message:
            case ("raise", text):
                raise ValueError(text)
            case "unpicklable":
                raise LocalError()
            case ("exit", code):
                sys.exit(code)
            case ("_exit", code):
                os._exit(code)
            case "segfault":
                ctypes.string_at(0)
            case ("sleep", seconds):
                time.sleep(seconds)
            case "env":
                return os.environ.get("OTPNN_TEST_ENV")
            case "lambda":
                return lambda: None
        return ("echo", message, os.getpid())

    def add(self, x: int) -> int:
        return self.base + x


class Broken(pykka.ThreadingActor):
    def __init__(self) -> None:
        super().__init__()
        raise KeyError("no config")


class WithEnv(Echo):
    process_options = ProcessOptions(env={"OTPNN_TEST_ENV": "set-in-child"})


class BatchScheduled(Echo):
    process_options = ProcessOptions(batch_scheduling=True)


class HangIsFailure(Echo):
    process_options = ProcessOptions(ask_deadline_is_failure=True)


@pytest.fixture
def actor():
    ref = start(Echo, 40)
    yield ref
    if not ref.stop(timeout=PROMPT):
        ref.kill()
        ref.join(PROMPT)


def _gone(pid: int) -> bool:
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def test_ref_satisfies_the_handle_protocol(actor: ProcessActorRef) -> None:
    assert isinstance(actor, ActorHandle)
    assert actor.kind == "process"
    assert actor.pid not in (None, os.getpid())
    assert actor.is_alive()
    assert actor.exit_reason is None


def test_ask_tell_and_proxy_run_in_the_child(actor: ProcessActorRef) -> None:
    reply = actor.ask("hi", timeout=PROMPT)
    assert reply == ("echo", "hi", actor.pid)
    actor.tell("told")  # ordered before the next ask
    assert actor.ask("again", block=False).get(timeout=PROMPT)[1] == "again"
    proxy = actor.proxy()
    assert proxy.add(2).get(timeout=PROMPT) == 42
    assert proxy.started_in.get(timeout=PROMPT) == actor.pid  # on_start ran in the child
    proxy.base = 1
    assert proxy.add(2).get(timeout=PROMPT) == 3
    assert proxy.counter.bump().get(timeout=PROMPT) == 1  # traversable attribute
    proxy.add.defer(5)
    assert "add" in dir(proxy)
    with pytest.raises(AttributeError):
        _ = proxy.nope


def test_proxy_sees_attributes_added_after_start(actor: ProcessActorRef) -> None:
    proxy = actor.proxy()
    proxy.base = 3  # ProxySetAttr of a known attribute
    actor.ask(pykka.messages.ProxySetAttr(attr_path=("late",), value=7), timeout=PROMPT)
    assert proxy.late.get(timeout=PROMPT) == 7


def test_exception_reaches_caller_as_same_type_then_actor_crashes(tmp_path: Path) -> None:
    log = tmp_path / "log"
    ref = start(Echo, 0, str(log))
    with pytest.raises(ValueError, match="bad input") as info:
        ref.ask(("raise", "bad input"), timeout=PROMPT)
    assert "on_receive" in info.value.remote_traceback  # the child's traceback text
    assert ref.join(PROMPT)
    assert isinstance(ref.exit_reason, ValueError)
    assert str(ref.exit_reason) == "bad input"
    assert log.read_text().split("\n")[:2] == ["start", "failure ValueError"]
    with pytest.raises(pykka.ActorDeadError):
        ref.ask("late", timeout=PROMPT)
    with pytest.raises(pykka.ActorDeadError):
        ref.tell("late")


def test_crash_in_a_tell_is_the_exit_reason() -> None:
    ref = start(Echo)
    ref.tell(("raise", "told"))
    assert ref.join(PROMPT)
    assert isinstance(ref.exit_reason, ValueError)


def test_unpicklable_exception_arrives_as_remote_error() -> None:
    ref = start(Echo)
    with pytest.raises(RemoteError) as info:
        ref.ask("unpicklable", timeout=PROMPT)
    assert info.value.type_name == "LocalError"
    assert info.value.message == "cannot cross"
    assert "raise LocalError()" in info.value.remote_traceback
    assert ref.join(PROMPT)
    assert isinstance(ref.exit_reason, RemoteError)


def test_unpicklable_reply_fails_the_ask_only(actor: ProcessActorRef) -> None:
    with pytest.raises(TypeError, match="could not be pickled"):
        actor.ask("lambda", timeout=PROMPT)
    assert actor.ask("still here", timeout=PROMPT)[1] == "still here"


def test_constructor_failure_raises_from_start() -> None:
    with pytest.raises(KeyError, match="no config"):
        start(Broken)


def test_normal_stop_runs_on_stop_with_its_reason(tmp_path: Path) -> None:
    log = tmp_path / "log"
    ref = start(Echo, 0, str(log))
    down = []
    ref.monitor(down.append)
    ref.tell("queued before stop")
    assert ref.stop(timeout=PROMPT, reason=shutdown("done"))
    assert ref.exit_reason == ("shutdown", "done")
    assert [d.reason for d in down] == [("shutdown", "done")]
    assert log.read_text() == "start\nstop\n"
    assert ref.stop(timeout=PROMPT)  # stopping a dead actor is fine
    seen = []
    ref.monitor(seen.append)
    assert seen[0].reason == NOPROC


def test_stop_default_reason_is_normal(actor: ProcessActorRef) -> None:
    assert actor.stop(timeout=PROMPT)
    assert actor.exit_reason == NORMAL


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (("exit", 3), ExitedWithCode(3)),
        (("_exit", 9), ExitedWithCode(9)),
        ("segfault", KilledBySignal(signal.SIGSEGV)),
    ],
)
def test_abnormal_exits_report_the_real_reason(message: object, reason: Exception) -> None:
    ref = start(Echo)
    future = ref.ask(message, block=False)
    with pytest.raises(pykka.ActorDeadError):
        future.get(timeout=PROMPT)
    assert ref.join(PROMPT)
    assert type(ref.exit_reason) is type(reason)
    assert str(ref.exit_reason) == str(reason)


def test_sigkill_from_outside_fails_pending_futures_promptly(actor: ProcessActorRef) -> None:
    down = []
    actor.monitor(down.append)
    pending = actor.ask(("sleep", 30), block=False)
    queued = actor.ask("after", block=False)
    t0 = time.monotonic()
    os.kill(actor.pid, signal.SIGKILL)
    for future in (pending, queued):
        with pytest.raises(pykka.ActorDeadError, match="SIGKILL"):
            future.get(timeout=PROMPT)
    assert actor.join(PROMPT)
    assert time.monotonic() - t0 < 1.0
    assert isinstance(actor.exit_reason, KilledBySignal)
    assert actor.exit_reason.signum == signal.SIGKILL
    assert down[0].reason is actor.exit_reason
    assert _gone(actor.pid)


def test_our_own_kill_is_reason_killed(actor: ProcessActorRef) -> None:
    actor.kill()
    assert actor.join(PROMPT)
    assert actor.exit_reason == KILLED


def test_hung_child_stop_times_out_then_kill_works(actor: ProcessActorRef) -> None:
    os.kill(actor.pid, signal.SIGSTOP)
    t0 = time.monotonic()
    assert actor.stop(timeout=0.3) is False
    assert time.monotonic() - t0 < 1.0
    actor.kill()
    assert actor.join(PROMPT)
    assert actor.exit_reason == KILLED


def test_hung_child_stop_with_full_pipe_does_not_block() -> None:
    ref = start(Echo)
    os.kill(ref.pid, signal.SIGSTOP)
    blob = b"x" * 65536
    sender = __import__("threading").Thread(target=lambda: _flood(ref, blob))
    sender.start()
    time.sleep(0.3)  # let the pipe fill up
    t0 = time.monotonic()
    assert ref.stop(timeout=0.3) is False
    assert time.monotonic() - t0 < 1.0
    ref.kill()
    assert ref.join(PROMPT)
    sender.join(PROMPT)
    assert not sender.is_alive()  # the blocked tell was released by the death


def _flood(ref: ProcessActorRef, blob: bytes) -> None:
    try:
        while True:
            ref.tell(blob)
    except pykka.ActorDeadError:
        return


def test_ask_deadline_as_failure_kills_a_hung_actor() -> None:
    ref = start(HangIsFailure)
    os.kill(ref.pid, signal.SIGSTOP)
    with pytest.raises(pykka.Timeout):
        ref.ask("anyone?", timeout=0.2)
    assert ref.join(PROMPT)
    assert isinstance(ref.exit_reason, DeadlineExceeded)


def test_ask_timeout_alone_does_not_kill(actor: ProcessActorRef) -> None:
    with pytest.raises(pykka.Timeout):
        actor.ask(("sleep", 0.3), timeout=0.05)
    assert actor.ask("alive", timeout=PROMPT)[1] == "alive"


def test_env_is_set_in_the_child_only() -> None:
    ref = start(WithEnv)
    try:
        assert ref.ask("env", timeout=PROMPT) == "set-in-child"
        assert "OTPNN_TEST_ENV" not in os.environ
    finally:
        ref.stop(timeout=PROMPT)


@pytest.mark.skipif(not hasattr(os, "SCHED_BATCH"), reason="SCHED_BATCH is Linux-only")
def test_batch_scheduling_applies_to_the_child_only() -> None:
    batch, plain = start(BatchScheduled), start(Echo)
    try:
        assert os.sched_getscheduler(batch.pid) == os.SCHED_BATCH
        assert os.sched_getscheduler(plain.pid) == os.SCHED_OTHER
        assert os.sched_getscheduler(0) == os.SCHED_OTHER
    finally:
        batch.stop(timeout=PROMPT)
        plain.stop(timeout=PROMPT)


def test_unpicklable_message_fails_the_caller_not_the_actor(actor: ProcessActorRef) -> None:
    with pytest.raises(Exception, match="pickle"):
        actor.ask(lambda: None, timeout=PROMPT)
    assert actor.ask("ok", timeout=PROMPT)[1] == "ok"


ORPHAN_SCRIPT = textwrap.dedent(
    """
    import multiprocessing.forkserver as fs, sys, time
    import pykka
    from supervision.process import start

    class Idle(pykka.ThreadingActor):
        def on_receive(self, message):
            time.sleep(message)

    if __name__ == "__main__":
        idle, busy = start(Idle), start(Idle)
        busy.tell(60)  # busy in a handler: cannot notice EOF, must die with the forkserver
        print(idle.pid, busy.pid, fs._forkserver._forkserver_pid, flush=True)
        time.sleep(60)
    """
)


def test_no_orphans_when_the_parent_is_sigkilled(tmp_path: Path) -> None:
    script = tmp_path / "parent.py"
    script.write_text(ORPHAN_SCRIPT)
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    parent = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, env=env)
    try:
        assert parent.stdout is not None
        pids = [int(p) for p in parent.stdout.readline().split()]
        assert len(pids) == 3
        assert not any(_gone(p) for p in pids)
    finally:
        parent.kill()
        parent.wait()
        if parent.stdout:
            parent.stdout.close()
    deadline = time.monotonic() + 5
    while not all(_gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert [p for p in pids if not _gone(p)] == []


class FailsOnStart(Echo):
    def on_start(self) -> None:
        super().on_start()
        raise RuntimeError("cannot start")

    def on_failure(self, *exc_info: object) -> None:
        time.sleep(0.2)  # a slow hook still finishes before ``start`` raises
        super().on_failure(*exc_info)


def test_on_start_failure_raises_from_start_after_on_failure(tmp_path: Path) -> None:
    log = tmp_path / "log"
    with pytest.raises(RuntimeError, match="cannot start"):
        start(FailsOnStart, 0, str(log))
    assert log.read_text() == "start\nfailure RuntimeError\n"
