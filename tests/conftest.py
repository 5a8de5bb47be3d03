"""Suite-wide leak checks: after every test, nothing the test started may still be running.

Checked after each test (with a short grace period for things that are already on their way
out): no Pykka actor registered, no new thread alive, no descendant process of this test
process, no new shared-memory segment in /dev/shm; with the ``no_fd_leaks`` fixture, no new open
file descriptor. A test that leaks fails, naming what it left behind. The forkserver that process
actors are started from is started once per session, before the first test.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pykka
import pytest
from proc_tree import descendants

GRACE_SECONDS = 5.0
SHM_DIR = Path("/dev/shm")


def _shm_segments() -> set[str]:
    if not SHM_DIR.is_dir():
        return set()
    return {p.name for p in SHM_DIR.iterdir() if not p.name.startswith("sem.")}


def _open_fds() -> set[int]:
    return {int(fd) for fd in os.listdir("/proc/self/fd")}


def _leaks(threads_before: set[threading.Thread], shm_before: set[str], procs_before: set[int]):
    threads = {t for t in threading.enumerate() if t.is_alive()} - threads_before
    actors = pykka.ActorRegistry.get_all()
    procs = descendants() - procs_before
    shm = {name for name in _shm_segments() - shm_before if not _foreign(name, procs)}
    return threads, actors, procs, shm


def _foreign(segment: str, descendants: set[int]) -> bool:
    """A SharedArray segment (``<prefix><pid>_<random>``, e.g. ``otpnn_<pid>_...``) made by a
    process outside this test run, e.g. another test run on the same machine: not this test's
    leak."""
    parts = segment.rsplit("_", 2)
    if len(parts) < 3 or not parts[1].isdigit():
        return False
    return int(parts[1]) != os.getpid() and int(parts[1]) not in descendants


@pytest.fixture(scope="session", autouse=True)
def forkserver() -> None:
    """Start the process actors' forkserver (and the resource tracker) once, before the first
    test's snapshot: they live for the whole session and are not a test's leak."""
    from otpnn.training.job import FORKSERVER_PRELOAD
    from supervision.process import ensure_forkserver

    ensure_forkserver(FORKSERVER_PRELOAD)  # as a training job would: tests see what users get


@pytest.fixture
def no_fd_leaks() -> Iterator[None]:
    """Fail a test that leaves file descriptors open (pipes, sentinels, mappings' fds).

    Opt-in (``pytest.mark.usefixtures("no_fd_leaks")``): fds of lazily started shared services
    would count as a leak in tests that do not start those services themselves.
    """
    before = _open_fds()
    yield
    deadline = time.monotonic() + GRACE_SECONDS
    while (leaked := _open_fds() - before) and time.monotonic() < deadline:
        time.sleep(0.02)
    if leaked:
        targets = {}
        for fd in sorted(leaked):
            try:
                targets[fd] = os.readlink(f"/proc/self/fd/{fd}")
            except OSError:
                continue
        if targets:
            pytest.fail(f"leak after test: file descriptors still open: {targets}", pytrace=False)


@pytest.fixture(autouse=True)
def no_leaks(request: pytest.FixtureRequest) -> Iterator[None]:
    threads_before = set(threading.enumerate())
    shm_before = _shm_segments()
    procs_before = descendants()
    yield
    if request.node.get_closest_marker("allow_leaks"):
        return
    deadline = time.monotonic() + GRACE_SECONDS
    while True:
        threads, actors, procs, shm = _leaks(threads_before, shm_before, procs_before)
        if not (threads or actors or procs or shm) or time.monotonic() > deadline:
            break
        time.sleep(0.02)
    problems = []
    if actors:
        problems.append(f"actors still registered: {actors}")
        pykka.ActorRegistry.stop_all(block=True, timeout=5)
    if threads:
        problems.append(f"threads still alive: {sorted(t.name for t in threads)}")
    if procs:
        problems.append(f"child processes still alive: {sorted(procs)}")
    if shm:
        problems.append(f"shared-memory segments left in /dev/shm: {sorted(shm)}")
    if problems:
        pytest.fail("leak after test: " + "; ".join(problems), pytrace=False)


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line(
        "markers", "allow_leaks: skip the leak check (only for tests that check leaks themselves)"
    )
