"""The core guarantee: the same checksum as the serial reference, whatever runs the workers."""

from __future__ import annotations

import pytest
import structlog.testing


@pytest.mark.parametrize(
    ("workers", "backend"), [(1, "thread"), (3, "thread"), (2, "process"), (4, "process")]
)
def test_checksum_equals_reference(workers, backend, fault_free_sha, config, run_job) -> None:
    sha, job = run_job(config(workers=workers, backend=backend))
    assert sha == fault_free_sha
    assert job.state.restarts == 0
    assert job.progress.step == 24


def test_shard_size_is_part_of_the_result(config, run_job, reference_sha) -> None:
    """A different micro-shard size sums in another order: a (slightly) different model.
    This is why the shard size is config, and why the worker count is not."""
    sha, _ = run_job(config(workers=2, backend="thread", shard_size=32))
    assert sha == reference_sha(shard_size=32)
    assert sha != reference_sha()


def test_momentum_and_weight_decay_match_reference(config, run_job, reference_sha) -> None:
    sha, _ = run_job(config(workers=2, backend="thread", momentum=0.9, weight_decay=1e-4))
    assert sha == reference_sha(momentum=0.9, weight_decay=1e-4)


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_stepwise_protocol_gives_the_same_checksum(backend, fault_free_sha, config, run_job):
    """The per-step protocol (Ray's, and the fallback where the lockstep barrier is not
    supported) with thread and process workers: the same result as lockstep runs."""
    with structlog.testing.capture_logs() as lines:
        sha, job = run_job(config(workers=2, backend=backend), protocol="stepwise")
    assert sha == fault_free_sha
    assert job.state.restarts == 0
    started = [line for line in lines if line["event"] == "coordinator_started"]
    assert [line["protocol"] for line in started] == ["stepwise"]
