"""Property test: the real supervisor against a small pure-Python model of OTP's rules.

Random sequences of crashes, normal exits, terminate_child, restart_child and clock moves are
applied to a real supervisor of real thread actors and to :class:`Model`. After every step the
start/stop events the children recorded, each child's state and restart count, and whether the
supervisor gave up must be the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from sup_support import FakeClock, Worker, crash, exit_normally, sync

from supervision import SHUTDOWN, ChildNotFoundError, ChildRunningError, ChildSpec, Supervisor

MAX_RESTARTS = 2
MAX_SECONDS = 5.0


@dataclass
class MChild:
    id: str
    restart: str
    running: bool = True
    restarts: int = 0


@dataclass
class Model:
    strategy: str
    children: list[MChild]
    now: float = 0.0
    history: list[float] = field(default_factory=list)
    events: list[tuple[str, str]] = field(default_factory=list)
    gave_up: bool = False

    def find(self, cid: str) -> MChild | None:
        return next((c for c in self.children if c.id == cid), None)

    def stop(self, child: MChild) -> None:
        self.events.append(("stop", child.id))
        child.running = False

    def exited(self, child: MChild, abnormal: bool) -> None:
        child.running = False
        if child.restart == "temporary":
            self.children.remove(child)
            return
        if child.restart == "transient" and not abnormal:
            return
        self.history = [t for t in [*self.history, self.now] if t >= self.now - MAX_SECONDS]
        if len(self.history) > MAX_RESTARTS:
            self.gave_up = True
            for other in reversed(self.children):
                if other.running:
                    self.stop(other)
            return
        index = self.children.index(child)
        group = {
            "one_for_one": [child],
            "one_for_all": list(self.children),
            "rest_for_one": self.children[index:],
        }[self.strategy]
        for other in reversed(group):
            if other is not child and other.running:
                self.stop(other)
        dropped = [c for c in group if c is not child and c.restart == "temporary"]
        self.children = [c for c in self.children if c not in dropped]
        for member in group:
            if member not in dropped and not member.running:
                self.events.append(("start", member.id))
                member.running = True
                member.restarts += 1

    def terminate(self, cid: str) -> str | None:
        child = self.find(cid)
        if child is None:
            return "not_found"
        if child.running:
            self.stop(child)
        if child.restart == "temporary":
            self.children.remove(child)
        return None

    def restart_child(self, cid: str) -> str | None:
        child = self.find(cid)
        if child is None:
            return "not_found"
        if child.running:
            return "running"
        self.events.append(("start", child.id))
        child.running = True
        return None


IDS = ["a", "b", "c"]
ops = st.lists(
    st.one_of(
        st.tuples(
            st.sampled_from(["crash", "crash", "crash", "exit", "terminate", "restart"]),
            st.sampled_from(IDS),
        ),
        st.tuples(st.just("tick"), st.sampled_from([0.5, 2.0, MAX_SECONDS, 6.0])),
    ),
    max_size=15,
)


@settings(max_examples=60, deadline=None)
@given(
    strategy=st.sampled_from(["one_for_one", "one_for_all", "rest_for_one"]),
    restarts=st.lists(
        st.sampled_from(["permanent", "transient", "temporary"]), min_size=3, max_size=3
    ),
    steps=ops,
)
# The window is inclusive, as OTP's: a restart exactly MAX_SECONDS ago still counts. Random
# draws rarely land on the boundary, so it is always tried.
@example(
    strategy="one_for_one",
    restarts=["permanent"] * 3,
    steps=[("crash", "a"), ("crash", "a"), ("tick", MAX_SECONDS), ("crash", "a")],
)
def test_supervisor_matches_the_otp_model(strategy: str, restarts: list[str], steps: list) -> None:
    events: list[tuple[str, str]] = []
    clock = FakeClock()
    specs = [
        ChildSpec.actor(cid, Worker, cid, events, restart=r)
        for cid, r in zip(IDS, restarts, strict=True)
    ]
    model = Model(strategy, [MChild(cid, r) for cid, r in zip(IDS, restarts, strict=True)])
    model.events = [("start", cid) for cid in IDS]
    sup = Supervisor.start_link(
        specs, strategy=strategy, max_restarts=MAX_RESTARTS, max_seconds=MAX_SECONDS, clock=clock
    )
    try:
        for op, arg in steps:
            _apply(sup, model, clock, op, arg)
            if model.gave_up:
                assert sup.join(5)
                assert sup.exit_reason == SHUTDOWN
                assert events == model.events
                return
            observed = [(c.id, c.status == "running", c.restarts) for c in sup.which_children()]
            assert observed == [(c.id, c.running, c.restarts) for c in model.children]
            assert events == model.events
    finally:
        sup.stop(timeout=5)


def _apply(sup, model: Model, clock: FakeClock, op: str, arg) -> None:
    if op == "tick":
        clock.advance(arg)
        model.now += arg
        return
    child = model.find(arg)
    if op in ("crash", "exit"):
        if child is None or not child.running:
            return
        ref = next(c.ref for c in sup.which_children() if c.id == arg)
        if op == "crash":
            crash(ref, sup)
        else:
            exit_normally(ref)
            model.events.append(("stop", arg))  # on_stop ran
            sync(sup)
        model.exited(child, abnormal=op == "crash")
    elif op == "terminate":
        expected = model.terminate(arg)
        if expected == "not_found":
            with pytest.raises(ChildNotFoundError):
                sup.terminate_child(arg)
        else:
            sup.terminate_child(arg)
    else:
        expected = model.restart_child(arg)
        if expected == "not_found":
            with pytest.raises(ChildNotFoundError):
                sup.restart_child(arg)
        elif expected == "running":
            with pytest.raises(ChildRunningError):
                sup.restart_child(arg)
        else:
            sup.restart_child(arg)
