"""A local SGD job through the HTTP API: its fields in the job body, its bits in the result."""

from __future__ import annotations

from service_support import JOB

from otpnn.config import TrainConfig
from otpnn.data import synthetic_dataset
from otpnn.reference import train_reference

LOCAL = {"algorithm": "local-sgd", "sync_every": 4, "warmup_steps": 3}


def test_a_local_sgd_job_ends_with_the_references_bits(service) -> None:
    svc = service()
    job_id = svc.submit(**LOCAL)
    status = svc.wait(job_id)
    assert status["state"] == "succeeded", status
    cfg = TrainConfig(**{k: v for k, v in JOB.items() if k != "backend"}, **LOCAL)
    dataset = synthetic_dataset(cfg.seed, cfg.synthetic_train, cfg.synthetic_test)
    assert status["final"]["params_sha256"] == train_reference(cfg, dataset).params_sha256
    config = svc.client.get(f"/jobs/{job_id}/report").json()["config"]
    assert {k: config[k] for k in LOCAL} == LOCAL


def test_local_sgd_fields_with_sync_are_a_422(service, job_config) -> None:
    svc = service()
    r = svc.client.post("/jobs", json={**job_config, "sync_every": 4})
    assert r.status_code == 422, r.text
    assert "applies to algorithm 'local-sgd' only" in r.json()["error"]
    r = svc.client.post("/jobs", json={**job_config, "algorithm": "hogwild"})
    assert r.status_code == 422, r.text
    assert svc.client.get("/jobs").json() == []
