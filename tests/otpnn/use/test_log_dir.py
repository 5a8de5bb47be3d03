"""``otpnn train --log-dir``: metrics.csv and TensorBoard scalars (read back from the event file),
per epoch and per --log-every steps, with the numbers of the report."""

from __future__ import annotations

import csv
import json
import struct
import subprocess
import sys
from pathlib import Path

from tensorboardX.proto import event_pb2

SMALL = [
    "--dataset", "synthetic", "--synthetic-train", "768", "--synthetic-test", "256",
    "--batch-size", "64", "--seed", "7", "--epochs", "2", "--workers", "2", "--quiet",
]  # fmt: skip


def scalars(directory: Path) -> dict[str, list[tuple[int, float]]]:
    """tag -> [(step, value)] from the TFRecord-framed event files (length, crc, data, crc)."""
    found: dict[str, list[tuple[int, float]]] = {}
    for path in sorted(directory.glob("events.out.tfevents.*")):
        data = path.read_bytes()
        at = 0
        while at < len(data):
            (n,) = struct.unpack("<Q", data[at : at + 8])
            event = event_pb2.Event.FromString(data[at + 12 : at + 12 + n])
            at += 12 + n + 4
            for v in event.summary.value:
                found.setdefault(v.tag, []).append((event.step, v.simple_value))
    return found


def test_log_dir_has_epoch_and_step_metrics_in_csv_and_tensorboard(tmp_path) -> None:
    logs, report = tmp_path / "logs", tmp_path / "r.json"
    run = subprocess.run(
        [sys.executable, "-m", "otpnn", "train", *SMALL, "--log-dir", str(logs),
         "--log-every", "5", "--report", str(report)],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    epochs = json.loads(report.read_text())["epochs"]
    rows = list(csv.DictReader((logs / "metrics.csv").open()))
    epoch_rows = [r for r in rows if r["kind"] == "epoch"]
    assert [int(r["step"]) for r in epoch_rows] == [12, 24]
    for row, want in zip(epoch_rows, epochs, strict=True):
        for key in ("train_loss", "train_accuracy", "test_loss", "test_accuracy"):
            assert abs(float(row[key]) - want[key]) < 1e-6
    step_rows = [int(r["step"]) for r in rows if r["kind"] == "step"]
    assert step_rows == [5, 10, 12, 15, 20, 24]  # every 5 steps, and each epoch's last
    tb = scalars(logs)
    assert [s for s, _ in tb["epoch/test_accuracy"]] == [12, 24]
    assert abs(tb["epoch/train_loss"][-1][1] - epochs[-1]["train_loss"]) < 1e-5
    assert [s for s, _ in tb["step/train_loss"]] == step_rows


def test_a_resumed_run_appends_to_the_same_log(tmp_path) -> None:
    logs, ck = tmp_path / "logs", tmp_path / "ck"
    common = [*SMALL, "--log-dir", str(logs), "--log-every", "6", "--checkpoint-dir", str(ck)]
    for extra in (["--epochs", "1"], ["--epochs", "2", "--resume"]):
        run = subprocess.run(
            [sys.executable, "-m", "otpnn", "train", *common, *extra],
            capture_output=True, text=True, timeout=120, check=False,
        )  # fmt: skip
        assert run.returncode == 0, run.stderr
    rows = list(csv.DictReader((logs / "metrics.csv").open()))
    assert [(r["kind"], int(r["step"])) for r in rows] == [
        ("step", 6), ("step", 12), ("epoch", 12), ("step", 18), ("step", 24), ("epoch", 24),
    ]  # fmt: skip
    assert [s for s, _ in scalars(logs)["epoch/train_loss"]] == [12, 24]
