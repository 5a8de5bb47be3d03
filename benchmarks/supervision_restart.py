"""How long from a crash to a running replacement, for a thread child under one_for_one.

Each round tells the child to crash, then waits for the replacement's ``on_start`` to record
the time: that covers the crash itself, on_failure, the exit report to the supervisor (a DOWN
message), the supervisor's decision, and starting the new thread up to ``on_start``.

    python benchmarks/supervision_restart.py [--rounds 500]
"""

from __future__ import annotations

import argparse
import logging
import os
import statistics
import threading
import time

import structlog

from supervision import Actor, ChildSpec, Supervisor


class Probe:
    """Where each new incarnation reports that it is up."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.at = 0.0


class Crashy(Actor):
    def __init__(self, probe: Probe) -> None:
        super().__init__()
        self.probe = probe

    def on_start(self) -> None:
        self.probe.at = time.perf_counter()
        self.probe.started.set()

    def on_receive(self, message: object) -> None:
        raise RuntimeError("crash on purpose")


def measure(rounds: int) -> list[float]:
    probe = Probe()
    sup = Supervisor.start_link(
        [ChildSpec.actor("crashy", Crashy, probe)], max_restarts=rounds + 1, max_seconds=3600
    )
    latencies = []
    try:
        for _ in range(rounds):
            child = sup.which_children()[0].ref
            probe.started.clear()
            t0 = time.perf_counter()
            child.tell("crash")
            if not probe.started.wait(10):
                raise RuntimeError("no restart within 10 s")
            latencies.append(probe.at - t0)
    finally:
        sup.stop(timeout=10)
    return latencies


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=500)
    args = parser.parse_args()
    # Logging every lifecycle event would measure the console, not the supervisor.
    structlog.configure(wrapper_class=structlog.make_filtering_bound_logger(logging.CRITICAL))
    latencies = sorted(measure(args.rounds))
    p99 = latencies[min(len(latencies) - 1, int(0.99 * len(latencies)))]
    structlog.reset_defaults()
    structlog.get_logger("benchmark").info(
        "supervision_restart",
        rounds=len(latencies),
        cores=os.cpu_count(),
        median_ms=round(statistics.median(latencies) * 1e3, 3),
        p99_ms=round(p99 * 1e3, 3),
        max_ms=round(latencies[-1] * 1e3, 3),
    )


if __name__ == "__main__":
    main()
