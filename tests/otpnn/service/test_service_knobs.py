"""A job with a learning-rate schedule and a validation split through the HTTP API: the fields
in the job body, the reference's bits, validation metrics in the status, the best epoch's model."""

from __future__ import annotations

import pytest
from service_support import JOB

from otpnn.checkpoint import load_weights
from otpnn.config import TrainConfig
from otpnn.data import synthetic_dataset
from otpnn.model import params_sha256
from otpnn.reference import train_reference

# lr 1.0 on a small net overshoots after the first epoch: the best epoch is not the last.
KNOBS = {
    "lr": 1.0, "hidden": [16], "epochs": 3, "lr_schedule": "step", "lr_step_epochs": 2,
    "lr_gamma": 0.5, "val_split": 0.25, "keep_best": True,
}  # fmt: skip


def test_a_job_with_knobs_reports_validation_and_keeps_the_best_model(service, tmp_path) -> None:
    svc = service()
    job_id = svc.submit(**KNOBS)
    status = svc.wait(job_id)
    assert status["state"] == "succeeded", status
    cfg = TrainConfig(**{**{k: v for k, v in JOB.items() if k != "backend"}, **KNOBS})
    dataset = synthetic_dataset(cfg.seed, cfg.synthetic_train, cfg.synthetic_test)
    reference = train_reference(cfg, dataset)
    assert reference.best is not None
    assert status["final"]["params_sha256"] == reference.params_sha256
    assert status["metrics"]["val_accuracy"] == reference.history[-1]["val_accuracy"]
    assert status["final"]["best"]["epoch"] == reference.best.epoch
    report = svc.client.get(f"/jobs/{job_id}/report").json()
    assert {k: report["config"][k] for k in KNOBS} == KNOBS
    losses = [r["val_loss"] for r in reference.history]  # evaluated as the test set, not bits
    assert [r["val_loss"] for r in report["epochs"]] == pytest.approx(losses, rel=1e-6)
    model = tmp_path / "model.safetensors"
    model.write_bytes(svc.client.get(f"/jobs/{job_id}/model").content)
    assert params_sha256(load_weights(model)[0]) == params_sha256(reference.best.params)
    assert reference.best.epoch < 3  # the model is not the last epoch's


def test_bad_knobs_are_a_422(service, job_config) -> None:
    svc = service()
    for body, message in (
        ({"val_split": 1.0}, "val_split"),
        ({"keep_best": True}, "expected false without val_split"),
        ({"lr_min": 0.1}, "applies to lr_schedule 'cosine' only"),
        ({"lr_schedule": "linear"}, "lr_schedule"),
        ({"val_split": 768}, "it holds out 768 of the 768 training rows"),
    ):
        r = svc.client.post("/jobs", json={**job_config, **body})
        assert r.status_code == 422, r.text
        assert message in r.json()["error"], r.text
    assert svc.client.get("/jobs").json() == []
