"""The service bounds a job's whole memory (every segment, every worker) before queueing it."""

from __future__ import annotations


def test_a_job_that_would_not_fit_is_a_422_saying_what_it_needs(service, monkeypatch) -> None:
    monkeypatch.setenv("OTPNN_MAX_MEMORY", "512M")
    svc = service()
    job = {"dataset": "synthetic", "synthetic_train": 20000, "batch_size": 20000,
           "shard_size": 1, "hidden": [16], "epochs": 1}  # fmt: skip
    r = svc.client.post("/jobs", json=job)
    assert r.status_code == 422, r.text
    assert "would need about 1." in r.json()["error"]
    assert "gradient rows" in r.json()["error"]
    assert svc.client.get("/jobs").json() == []
    monkeypatch.setenv("OTPNN_MAX_MEMORY", "4G")
    assert svc.client.post("/jobs", json={**job, "shard_size": 20000}).status_code == 201
