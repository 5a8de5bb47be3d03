"""An async SGD job through the HTTP API: its fields in the job body, its bits in the result."""

from __future__ import annotations

from service_support import JOB

from otpnn.config import TrainConfig
from otpnn.data import synthetic_dataset
from otpnn.reference import train_reference

# Momentum and no warm-up (not async's defaults): the momentum buffer is part of what
# the runs must carry over faults and resumes.
ASYNC = {"algorithm": "async", "staleness": 3, "lr": 0.1, "momentum": 0.5, "lr_warmup_steps": 0}


def test_an_async_job_ends_with_the_references_bits(service) -> None:
    svc = service()
    job_id = svc.submit(**ASYNC)
    status = svc.wait(job_id)
    assert status["state"] == "succeeded", status
    cfg = TrainConfig(**{k: v for k, v in JOB.items() if k != "backend"}, **ASYNC)
    dataset = synthetic_dataset(cfg.seed, cfg.synthetic_train, cfg.synthetic_test)
    assert status["final"]["params_sha256"] == train_reference(cfg, dataset).params_sha256
    config = svc.client.get(f"/jobs/{job_id}/report").json()["config"]
    assert {k: config[k] for k in ASYNC} == ASYNC


def test_a_bad_staleness_is_a_422(service, job_config) -> None:
    svc = service()
    r = svc.client.post("/jobs", json={**job_config, "staleness": 3})
    assert r.status_code == 422, r.text
    assert "applies to algorithm 'async' only" in r.json()["error"]
    r = svc.client.post("/jobs", json={**job_config, "algorithm": "async", "staleness": 0})
    assert r.status_code == 422, r.text
    assert "staleness" in r.json()["error"]
    assert svc.client.get("/jobs").json() == []


def test_a_job_body_without_momentum_or_warmup_takes_asyncs_defaults(service) -> None:
    """Omitted (or null), they are async's; the record and the report hold the values used."""
    svc = service()
    job_id = svc.submit(algorithm="async", staleness=3, momentum=None)
    assert svc.job(job_id)["config"]["momentum"] == 0.0
    status = svc.wait(job_id)
    assert status["state"] == "succeeded", status
    config = svc.client.get(f"/jobs/{job_id}/report").json()["config"]
    assert (config["lr"], config["momentum"], config["lr_warmup_steps"]) == (0.2, 0.0, 200)
    explicit = {"algorithm": "async", "staleness": 3, "momentum": 0.0, "lr_warmup_steps": 200}
    cfg = TrainConfig(**{k: v for k, v in JOB.items() if k != "backend"}, **explicit)
    dataset = synthetic_dataset(cfg.seed, cfg.synthetic_train, cfg.synthetic_test)
    assert status["final"]["params_sha256"] == train_reference(cfg, dataset).params_sha256
