"""Async SGD on Ray workers: the serial reference's bits (those of thread and process workers),
also when a Ray worker's process is killed with updates queued."""

from __future__ import annotations

import pytest

pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'otpnn[ray]'")

from ray_session import training_helpers

from otpnn.faults import parse_fault

helpers = training_helpers()
# Momentum and no warm-up (not async's defaults): the momentum buffer is part of what
# the runs must carry over faults and resumes.
ASYNC = {"algorithm": "async", "staleness": 3, "lr": 0.1, "momentum": 0.5, "lr_warmup_steps": 0}


def test_async_on_ray_gives_the_reference_bits() -> None:
    sha, job = helpers.run_job(helpers.config(workers=2, backend="ray", **ASYNC))
    assert sha == helpers.reference_sha(**ASYNC)
    assert job.state.restarts == 0
    assert job.progress.step == 24


def test_a_ray_worker_killed_with_updates_queued_has_them_redone() -> None:
    faults = (parse_fault("kill:worker=1@step=9"),)
    sha, job = helpers.run_job(helpers.config(workers=2, backend="ray", **ASYNC), faults=faults)
    assert sha == helpers.reference_sha(**ASYNC)
    assert job.state.restarts_by_actor() == {"worker-1": 1}
