"""The validation split and best-epoch keeping: held-out rows are never trained on, the bits do
not depend on the workers, the best epoch is the first with the highest validation accuracy and
survives restarts and resumes; bad splits are one clear message."""

from __future__ import annotations

import dataclasses
import json
import math

import numpy as np
import pytest
from test_cli_train import SMALL, otpnn
from training_support import config, dataset, run_job

from otpnn.config import ConfigError
from otpnn.data import Dataset
from otpnn.faults import parse_fault
from otpnn.model import params_sha256
from otpnn.reference import train_reference
from otpnn.saved_model import load_model
from otpnn.training import JobOptions, TrainingFailed, TrainingJob
from otpnn.validation import Best, held_out_rows, keep_if_best

SPLIT = {"val_split": 0.25}
# lr 1.0 on a small net overshoots after the first epoch: validation accuracy falls each epoch.
OVERSHOOT = {"lr": 1.0, "hidden": (16,), "epochs": 3, "val_split": 0.25, "keep_best": True}


def _remaining(data: Dataset, rows: np.ndarray) -> Dataset:
    keep = np.setdiff1d(np.arange(len(data.train_labels)), rows)
    return dataclasses.replace(
        data, train_images=data.train_images[keep], train_labels=data.train_labels[keep]
    )


def test_held_out_rows_come_from_the_seed_and_the_split_alone() -> None:
    rows = held_out_rows(config(**SPLIT), 768)
    assert len(rows) == 192 == math.ceil(0.25 * 768)
    assert np.array_equal(rows, held_out_rows(config(**SPLIT, workers=2, backend="thread"), 768))
    assert not np.array_equal(rows, held_out_rows(config(**SPLIT, seed=8), 768))
    assert len(held_out_rows(config(val_split=100), 768)) == 100
    assert len(held_out_rows(config(val_split=1e-9), 768)) == 1  # a fraction rounds up


def test_held_out_rows_are_never_trained_on() -> None:
    data, cfg = dataset(), config(workers=2, backend="thread", **SPLIT)
    rows = held_out_rows(cfg, len(data.train_labels))
    sha, job = run_job(cfg)
    # The run is a run on the remaining rows ...
    assert sha == train_reference(config(), _remaining(data, rows)).params_sha256
    # ... whatever the held-out rows hold: scrambled, they change the validation, not the bits.
    images, labels = data.train_images.copy(), data.train_labels.copy()
    images[rows] = 255 - images[rows]
    labels[rows] = (labels[rows] + 1) % 10
    scrambled = dataclasses.replace(data, train_images=images, train_labels=labels)
    other = TrainingJob(cfg, scrambled, JobOptions())
    assert params_sha256(other.run()["params"]) == sha
    val = [r["val_accuracy"] for r in job.state.result["history"]]
    assert val != [r["val_accuracy"] for r in other.state.result["history"]]


@pytest.mark.parametrize(("workers", "backend"), [(1, "thread"), (2, "process")])
def test_the_same_bits_and_validation_rows_for_any_worker_count(workers, backend) -> None:
    reference = train_reference(config(**OVERSHOOT), dataset())
    sha, job = run_job(config(workers=workers, backend=backend, **OVERSHOOT))
    assert sha == reference.params_sha256
    history = job.state.result["history"]
    assert [r["val_accuracy"] for r in history] == [r["val_accuracy"] for r in reference.history]
    # (Losses to the last bits only where BLAS runs the evaluation with as many threads.)
    losses = [r["val_loss"] for r in reference.history]
    assert [r["val_loss"] for r in history] == pytest.approx(losses, rel=1e-6)
    best = job.state.result["best"]
    assert reference.best is not None
    assert (best.epoch, params_sha256(best.params)) == (
        reference.best.epoch,
        params_sha256(reference.best.params),
    )


def test_the_best_epoch_is_the_first_with_the_highest_validation_accuracy() -> None:
    result = train_reference(config(**OVERSHOOT), dataset())
    accuracies = [r["val_accuracy"] for r in result.history]
    assert result.best is not None
    assert result.best.epoch == accuracies.index(max(accuracies)) + 1
    assert result.best.epoch < len(accuracies)  # a later epoch was worse: the test means it
    after_best = train_reference(config(**{**OVERSHOOT, "epochs": result.best.epoch}), dataset())
    assert params_sha256(result.best.params) == after_best.params_sha256
    assert result.params_sha256 != after_best.params_sha256


def test_a_tie_keeps_the_earlier_epoch_and_only_keep_best_keeps() -> None:
    cfg, params = config(val_split=0.1, keep_best=True), np.zeros(3, np.float32)
    best = keep_if_best(cfg, None, {"epoch": 1, "val_accuracy": 0.5}, params)
    assert best is not None
    assert keep_if_best(cfg, best, {"epoch": 2, "val_accuracy": 0.5}, params + 1) is best
    better = keep_if_best(cfg, best, {"epoch": 3, "val_accuracy": 0.6}, params + 2)
    assert isinstance(better, Best)
    assert (better.epoch, better.params[0]) == (3, 2.0)
    row = {"epoch": 1, "val_accuracy": 1.0}
    assert keep_if_best(config(val_split=0.1), None, row, params) is None


def test_the_best_survives_a_coordinator_restart_and_a_resume(tmp_path) -> None:
    cfg = config(workers=2, backend="thread", **OVERSHOOT)
    expected = train_reference(config(**OVERSHOOT), dataset())
    assert expected.best is not None
    # Restarted in memory mid-epoch 3 (576 rows to train on: 9 steps an epoch), after the best
    # (epoch 1), it keeps it.
    _, job = run_job(cfg, faults=(parse_fault("crash:coordinator@step=22"),))
    assert job.state.restarts == 1
    assert params_sha256(job.state.result["best"].params) == params_sha256(expected.best.params)
    # The tree gives up in epoch 3: the checkpoint of epoch 2's end holds the best; resumed, the
    # run ends with it.
    options = JobOptions(
        checkpoint_dir=str(tmp_path), faults=(parse_fault("crash:coordinator@step=22"),),
        max_restarts=0,
    )  # fmt: skip
    with pytest.raises(TrainingFailed):
        TrainingJob(cfg, dataset(), options).run()
    resumed = TrainingJob(cfg, dataset(), JobOptions(checkpoint_dir=str(tmp_path), resume=True))
    assert resumed.state.latest_snapshot().best.epoch == expected.best.epoch
    result = resumed.run()
    assert params_sha256(result["params"]) == expected.params_sha256
    assert result["best"].epoch == expected.best.epoch
    assert params_sha256(result["best"].params) == params_sha256(expected.best.params)


@pytest.mark.parametrize(
    ("split", "message"),
    [
        (768, "it holds out 768 of the 768 training rows; at least one must remain"),
        (5000, "it holds out 5000 of the 768 training rows"),
        (0.9999, "it holds out 768 of the 768 training rows"),
    ],
)
def test_a_split_that_leaves_nothing_to_train_on_is_refused(split, message) -> None:
    with pytest.raises(ConfigError, match=message):
        TrainingJob(config(val_split=split), dataset())


def test_the_cli_trains_saves_the_best_and_reports_it(tmp_path) -> None:
    report, model, logs = tmp_path / "r.json", tmp_path / "m.safetensors", tmp_path / "logs"
    run = otpnn(
        "train", *(a for a in SMALL if a != "--quiet"), "--workers", "2", "--backend", "thread",
        "--lr", "1.0", "--hidden", "16", "--epochs", "3", "--val-split", "0.25", "--keep-best",
        "--save", str(model), "--report", str(report), "--log-dir", str(logs),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    data = json.loads(report.read_text())
    best = data["final"]["best"]
    accuracies = [row["val_accuracy"] for row in data["epochs"]]
    assert best["epoch"] == accuracies.index(max(accuracies)) + 1 < 3
    assert best["params_sha256"] != data["final"]["params_sha256"]
    assert params_sha256(load_model(model).params) == best["params_sha256"]
    assert data["config"]["val_split"] == 0.25
    assert data["config"]["keep_best"] is True
    assert f"best epoch {best['epoch']}: val accuracy" in run.stdout
    epoch_lines = [line for line in run.stdout.splitlines() if line.startswith("epoch ")]
    assert len(epoch_lines) == 3
    assert all(", val loss " in line and ", val acc " in line for line in epoch_lines)
    csv_rows = (logs / "metrics.csv").read_text().splitlines()
    assert csv_rows[0].endswith(",val_loss,val_accuracy")
    epoch_rows = [r.split(",") for r in csv_rows if r.startswith("epoch,")]
    assert [float(r[-1]) for r in epoch_rows] == pytest.approx(accuracies, abs=1e-6)


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--val-split", "0"], "invalid val_split=0: expected a fraction > 0 and < 1"),
        (["--val-split", "1.0"], "invalid val_split=1.0"),
        (["--val-split", "nan"], "invalid val_split=nan"),
        (["--val-split", "tenth"], "'tenth': expected a fraction (e.g. 0.1)"),
        (["--keep-best"], "invalid keep_best=True: expected false without val_split"),
        (
            ["--lr-schedule", "cosine", "--lr-gamma", "0.5"],
            "invalid lr_gamma=0.5: expected 0.1 (it applies to lr_schedule",
        ),
    ],
)
def test_bad_values_are_one_message_and_exit_2(args, message) -> None:
    run = otpnn("train", *SMALL, "--epochs", "1", *args)
    assert run.returncode == 2
    assert message in run.stderr
    assert "Traceback" not in run.stderr
