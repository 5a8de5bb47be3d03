"""A local Ray for a test session, and the check that it leaves no process behind.

Started once, before the first test's leak snapshot (Ray's own processes live for the whole
session); a warm-up actor makes Ray start what it starts lazily (a worker process, the driver's
object-store client) before any test counts threads and processes.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import ray
from proc_tree import descendants

from supervision import Actor, spawn
from supervision.ray import connect

SHUTDOWN_GRACE_SECONDS = 10.0


@contextmanager
def local_ray() -> Iterator[None]:
    """Start a local Ray with 2 CPUs unless one is up; at the end (if started here) shut it
    down and fail if any process it started is still alive."""

    class Echo(Actor):  # local: Ray workers cannot import this test-only module, so by value
        def on_receive(self, message: object) -> object:
            return message

    before = descendants()
    connection = connect(num_cpus=2)
    warm = spawn(Echo, kind="ray")
    warm.ask(ray.put(0), timeout=60)
    warm.stop(timeout=30)
    ray_processes = descendants() - before
    try:
        yield
    finally:
        owned = connection.owned
        connection.close()
        if owned:
            deadline = time.monotonic() + SHUTDOWN_GRACE_SECONDS
            while (left := ray_processes & descendants()) and time.monotonic() < deadline:
                time.sleep(0.05)
            assert not left, f"Ray processes still alive after shutdown: {sorted(left)}"


def training_helpers():
    """The trainer tests' small synthetic problem and reference checksum (``config``,
    ``run_job``, ``reference_sha``, ``dataset``), shared with them rather than copied."""
    import importlib.util
    import sys

    name = "otpnn_training_helpers"
    if name not in sys.modules:
        path = Path(__file__).parent.parent / "training" / "training_support.py"
        spec = importlib.util.spec_from_file_location(name, path)
        module = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(module)
        sys.modules[name] = module
    return sys.modules[name]
