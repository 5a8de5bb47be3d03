"""Every protocol driver keeps the contract of otpnn.training.drivers.base, checked against a
stand-in for the coordinator (no supervision tree, no Coordinator): steps committed in order,
each once, with the serial reference's bits; a worker lost mid-stretch costs a redo, not bits."""

from __future__ import annotations

from collections.abc import Iterable, Iterator

import numpy as np
import pytest
from training_support import config, dataset, reference_sha

from otpnn.lr_schedule import LrSchedule
from otpnn.model import init_params, params_sha256
from otpnn.schedule import Batches, steps_per_epoch
from otpnn.training import blas
from otpnn.training.drivers import DRIVERS
from otpnn.training.drivers.base import Driver, Workers
from otpnn.training.fault_planner import FaultBook, FaultPlanner, Planned
from otpnn.training.loader import Loader
from otpnn.training.worker import Worker
from supervision import spawn
from supervision.refs import ActorHandle

CFG = config(epochs=1, workers=2, backend="thread")


class FakeHost:
    """What a driver may ask of the coordinator, recorded."""

    def __init__(self, workers: list[tuple[int, ActorHandle]], loader: ActorHandle) -> None:
        n = len(dataset().train_labels)
        self.config = CFG
        self.batches = Batches(n, CFG.batch_size, CFG.effective_shard_size,
                               steps_per_epoch(n, CFG.batch_size))  # fmt: skip
        self.lr_schedule = LrSchedule.of(CFG, self.batches.steps_per_epoch)
        self.planner = FaultPlanner(FaultBook(), None, self.batches)
        self.step_timeout = 10.0
        self.committed: list[int] = []
        self.failures: list[tuple[int, int, str, str]] = []
        self.fired: list[tuple[int, int, str]] = []
        self._workers, self._loader = workers, loader
        self._lost: set[str] = set()

    def await_workers(self) -> Workers:
        # As the coordinator: a failed incarnation may look alive until its death is detected.
        return [(i, w) for i, w in self._workers if w.actor_urn not in self._lost]

    def loader(self) -> ActorHandle:
        return self._loader

    def commit(self, step: int, losses: Iterable[float], corrects: Iterable[float]) -> None:
        assert all(np.isfinite(list(losses)))
        self.committed.append(step)

    def show_progress(self, step: int, epoch: int) -> None:
        pass

    def failure(self, step: int, index: int, worker: ActorHandle, kind: str, reason: str) -> None:
        self._lost.add(worker.actor_urn)
        self.failures.append((step, index, kind, reason))

    def lost_step(self, step: int) -> None:
        self.planner.redo(step)

    def fault_fired(self, planned: Planned, step: int, index: int) -> None:
        self.fired.append((step, index, planned.action))

    def interrupted(self) -> bool:
        return False


@pytest.fixture
def host() -> Iterator[FakeHost]:
    """Thread workers and a loader, with BLAS in this process held to one thread as a running
    job holds it (otherwise BLAS's thread count changes the bits)."""
    blas.hold_one_thread()
    ds = dataset()
    loader = spawn(Loader, ds.train_images, ds.train_labels, CFG.seed)
    segments = loader.proxy().segments().get(timeout=10)
    workers = [
        (i, spawn(Worker, i, segments, CFG.layer_sizes, CFG.activation, "thread")) for i in range(2)
    ]
    try:
        loader.proxy().open_epoch(1).get(timeout=10)
        yield FakeHost(workers, loader)
    finally:
        for _, w in workers:
            if w.is_alive():
                w.stop(timeout=10)
        loader.stop(timeout=10)
        blas.release_one_thread()


def _run(driver: Driver, host: FakeHost) -> str:
    total = host.batches.steps_per_epoch
    driver.start(0, init_params(CFG), None)
    try:
        driver.open_epoch(1)
        while not host.committed or host.committed[-1] < total:
            first = host.committed[-1] + 1 if host.committed else 1
            driver.run(first, total, 1)
        return params_sha256(driver.state(total)[0])
    finally:
        driver.close()


@pytest.mark.parametrize("protocol", list(DRIVERS))
def test_a_driver_commits_every_step_once_in_order_with_the_references_bits(
    protocol: str, host: FakeHost
) -> None:
    if DRIVERS[protocol].unsupported("thread"):
        pytest.skip(DRIVERS[protocol].unsupported("thread") or "")
    sha = _run(DRIVERS[protocol](host), host)
    assert host.failures == []
    assert host.committed == list(range(1, host.batches.steps_per_epoch + 1))
    assert sha == reference_sha(epochs=1, workers=2, backend="thread")


@pytest.mark.parametrize("protocol", list(DRIVERS))
def test_a_worker_lost_in_a_stretch_is_reported_and_its_work_redone(
    protocol: str, host: FakeHost
) -> None:
    if DRIVERS[protocol].unsupported("thread"):
        pytest.skip(DRIVERS[protocol].unsupported("thread") or "")
    from otpnn.faults import parse_fault

    host.planner.book.add(parse_fault("crash:worker=1@step=5"))
    sha = _run(DRIVERS[protocol](host), host)
    assert host.committed == list(range(1, host.batches.steps_per_epoch + 1))
    assert sha == reference_sha(epochs=1, workers=2, backend="thread")
    assert host.fired == [(5, 1, "crash")]
    assert [f[:3] for f in host.failures] == [(5, 1, "crash")]


def test_a_new_protocol_is_one_driver_class_registered_by_name(monkeypatch) -> None:
    """What adding a protocol takes: a Driver subclass, and its name in DRIVERS. The options
    resolver, the job, the coordinator, the Worker and the report take it from there."""
    from otpnn.training import JobOptions, TrainingJob
    from otpnn.training.drivers import stepwise

    class Relay(stepwise.StepwiseDriver):  # a new name for known arithmetic, to prove the seam
        name = "relay"

    monkeypatch.setitem(DRIVERS, Relay.name, Relay)
    job = TrainingJob(CFG, dataset(), JobOptions(protocol="relay"))
    sha = params_sha256(job.run()["params"])
    assert job.protocol == "relay"
    assert sha == reference_sha(epochs=1, workers=2, backend="thread")
