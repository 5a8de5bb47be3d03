"""Benchmark: thread actors vs process actors, and recovery time after SIGKILL.

Run: ``python benchmarks/process_actors.py [--asks N] [--tells N] [--kills N]``

Measures, for a Pykka thread actor and a process actor answering the same tiny message:
- ask/reply round trip (one ask at a time): median and p99 in microseconds;
- one-way throughput: messages/s for a burst of tells (closed by one ask);
and for process actors the time from ``os.kill(pid, SIGKILL)`` until a freshly started
replacement (started from the monitor's DOWN, as a one_for_one supervisor does) answers an ask.
"""

from __future__ import annotations

import argparse
import os
import signal
import statistics
import threading
import time

import pykka

from supervision.process import ensure_forkserver, start


class Echo(pykka.ThreadingActor):
    def on_receive(self, message: object) -> object:
        return message


def percentile(samples: list[float], q: float) -> float:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


def round_trips(ref: object, n: int) -> list[float]:
    ask = ref.ask  # type: ignore[attr-defined]
    for _ in range(200):  # warm-up
        ask(("step", 1), timeout=5)
    samples = []
    for i in range(n):
        t0 = time.perf_counter_ns()
        ask(("step", i), timeout=5)
        samples.append((time.perf_counter_ns() - t0) / 1000)
    return samples


def tell_rate(ref: object, n: int) -> float:
    tell = ref.tell  # type: ignore[attr-defined]
    t0 = time.perf_counter()
    for i in range(n):
        tell(("step", i))
    ref.ask("sync", timeout=30)  # type: ignore[attr-defined]
    return n / (time.perf_counter() - t0)


def restart_times(n: int) -> list[float]:
    samples = []
    for _ in range(n):
        ref = start(Echo)
        ref.ask("warm", timeout=5)
        down = threading.Event()
        ref.monitor(lambda _d, down=down: down.set())
        t0 = time.perf_counter()
        os.kill(ref.pid, signal.SIGKILL)
        down.wait(5)
        fresh = start(Echo)
        fresh.ask("ready?", timeout=5)
        samples.append((time.perf_counter() - t0) * 1000)
        fresh.stop(timeout=5)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--asks", type=int, default=5000)
    parser.add_argument("--tells", type=int, default=50000)
    parser.add_argument("--kills", type=int, default=20)
    args = parser.parse_args()
    t0 = time.perf_counter()
    ensure_forkserver()
    print(f"forkserver start: {(time.perf_counter() - t0) * 1000:.0f} ms (once per program)")
    for kind, starter in (("thread", Echo.start), ("process", lambda: start(Echo))):
        t0 = time.perf_counter()
        ref = starter()
        started = (time.perf_counter() - t0) * 1000
        rtt = round_trips(ref, args.asks)
        rate = tell_rate(ref, args.tells)
        ref.stop(timeout=5)
        print(
            f"{kind:8s} start {started:6.1f} ms | ask round trip"
            f" median {statistics.median(rtt):6.1f}"
            f" us, p99 {percentile(rtt, 0.99):6.1f} us ({1e6 / statistics.mean(rtt):7.0f} asks/s)"
            f" | tells {rate:8.0f} msgs/s"
        )
    restarts = restart_times(args.kills)
    print(
        f"SIGKILL -> replacement answering: median {statistics.median(restarts):.1f} ms,"
        f" p99 {percentile(restarts, 0.99):.1f} ms, max {max(restarts):.1f} ms (n={args.kills})"
    )


if __name__ == "__main__":
    main()
