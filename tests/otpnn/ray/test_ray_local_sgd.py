"""Local SGD on Ray workers: the serial reference's bits for the same worker count (those of
thread workers), also when a Ray worker's process is killed mid-round."""

from __future__ import annotations

import pytest

pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'otpnn[ray]'")

from ray_session import training_helpers

from otpnn.faults import parse_fault

helpers = training_helpers()
LOCAL = {"algorithm": "local-sgd", "sync_every": 4, "warmup_steps": 3}


def test_local_sgd_on_ray_gives_the_reference_bits() -> None:
    sha, job = helpers.run_job(helpers.config(workers=2, backend="ray", **LOCAL))
    assert sha == helpers.reference_sha(workers=2, **LOCAL)
    assert job.state.restarts == 0
    assert job.progress.step == 24


def test_a_ray_worker_killed_mid_round_redoes_its_share() -> None:
    faults = (parse_fault("kill:worker=1@step=9"),)
    sha, job = helpers.run_job(helpers.config(workers=2, backend="ray", **LOCAL), faults=faults)
    assert sha == helpers.reference_sha(workers=2, **LOCAL)
    assert job.state.restarts_by_actor() == {"worker-1": 1}
    lost = [(e.actor, e.step) for e in job.state.events() if e.kind == "worker_crash"]
    assert lost == [("worker-1", 8)]


def test_a_learning_rate_schedule_on_ray_gives_the_reference_bits() -> None:
    """Sync SGD (the coordinator updates) and local SGD (the Ray workers do) both take each
    step's rate from the schedule."""
    cosine = {"lr_schedule": "cosine", "lr_min": 0.02, "lr_warmup_steps": 5}
    sha, _ = helpers.run_job(helpers.config(workers=2, backend="ray", **cosine))
    assert sha == helpers.reference_sha(**cosine)
    sha, _ = helpers.run_job(helpers.config(workers=2, backend="ray", **LOCAL, **cosine))
    assert sha == helpers.reference_sha(workers=2, **LOCAL, **cosine)
    assert sha != helpers.reference_sha(workers=2, **LOCAL)
