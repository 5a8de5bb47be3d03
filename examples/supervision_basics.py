"""A short tour of supervision: a tree, a crash, a restart, an escalation.

Run it: ``python examples/supervision_basics.py``. Everything it shows is a structlog event
(child_started, child_exited, child_restarted, restart_intensity_exceeded, supervisor_gave_up,
supervisor_shutdown), as a supervisor reports in production.
"""

from __future__ import annotations

import contextlib

import structlog

from supervision import Actor, ChildSpec, Registry, Supervisor

log = structlog.get_logger("example")


class Counter(Actor):
    """Counts; crashes on ``"boom"`` (let it crash: the supervisor restarts it from zero)."""

    def __init__(self) -> None:
        super().__init__()
        self.count = 0

    def on_receive(self, message: object) -> int:
        if message == "boom":
            raise RuntimeError("counter exploded")
        self.count += 1
        return self.count


def main() -> None:
    registry = Registry()
    # root (one_for_one)
    # ├── counter          permanent worker, registered as "counter"
    # └── workers          rest_for_one supervisor that gives up after 1 restart in 5 s
    #     ├── w1
    #     └── w2
    workers = Supervisor.child_spec(
        "workers",
        [ChildSpec.actor("w1", Counter), ChildSpec.actor("w2", Counter)],
        strategy="rest_for_one",
        max_restarts=1,
    )
    root = Supervisor.start_link(
        [ChildSpec.actor("counter", Counter, name="counter"), workers],
        name="root",
        registry=registry,
    )
    log.info("tree", tree=root.tree())

    counter = registry.whereis("counter")
    counter.ask("tick", timeout=5)
    log.info("counted", count=counter.ask("tick", timeout=5))

    with contextlib.suppress(RuntimeError):  # the asker gets the exception, the actor dies
        counter.ask("boom", timeout=5)
    counter.join(5)
    root.which_children()  # answered once the root has handled the crash
    fresh = registry.whereis("counter")
    log.info("restarted", same_ref=fresh is counter, count=fresh.ask("tick", timeout=5))

    # Escalation: w1 crashes twice within 5 s, more than the workers supervisor allows.
    workers_ref = next(c.ref for c in root.which_children() if c.id == "workers")
    for _ in range(2):
        w1 = next(c.ref for c in workers_ref.which_children() if c.id == "w1")
        with contextlib.suppress(RuntimeError):
            w1.ask("boom", timeout=5)
        w1.join(5)
        with contextlib.suppress(Exception):
            workers_ref.which_children()
    workers_ref.join(5)
    log.info("escalated", workers_exit=workers_ref.exit_reason, gave_up=workers_ref.gave_up)
    log.info("tree", tree=root.tree())  # the root restarted the workers subtree

    root.stop(timeout=10)
    log.info("done", root_exit=root.exit_reason)


if __name__ == "__main__":
    main()
