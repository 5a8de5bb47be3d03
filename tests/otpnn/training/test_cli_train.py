"""``otpnn train`` as a user runs it: a real subprocess, real exit codes, real files."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

SMALL = [
    "--dataset", "synthetic", "--synthetic-train", "768", "--synthetic-test", "256",
    "--batch-size", "64", "--shard-size", "16", "--seed", "7", "--quiet",
]  # fmt: skip


def otpnn(*args: str, timeout: float = 90) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otpnn", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )


def test_train_writes_the_report_with_the_reference_checksum(tmp_path, fault_free_sha) -> None:
    report = tmp_path / "r.json"
    run = otpnn("train", *SMALL, "--epochs", "2", "--workers", "2", "--report", str(report))
    assert run.returncode == 0, run.stderr
    data = json.loads(report.read_text())
    assert set(data) >= {"config", "environment", "epochs", "restarts", "events", "final"}
    assert data["final"]["params_sha256"] == fault_free_sha
    assert data["final"]["steps"] == 24
    assert [row["epoch"] for row in data["epochs"]] == [1, 2]
    assert set(data["epochs"][0]) >= {
        "epoch", "seconds", "samples_per_second", "train_loss", "train_accuracy", "test_accuracy"
    }  # fmt: skip
    assert data["config"]["workers"] == 2
    assert data["config"]["backend"] == "process"
    assert data["environment"]["cores"] == os.cpu_count()
    assert data["environment"]["protocol"] == "lockstep"
    assert fault_free_sha in run.stdout


def test_stepwise_protocol_from_the_cli_ends_with_the_same_checksum(tmp_path, fault_free_sha):
    report = tmp_path / "r.json"
    run = otpnn("train", *SMALL, "--epochs", "2", "--workers", "2", "--protocol", "stepwise",
                "--report", str(report))  # fmt: skip
    assert run.returncode == 0, run.stderr
    data = json.loads(report.read_text())
    assert data["environment"]["protocol"] == "stepwise"
    assert data["final"]["params_sha256"] == fault_free_sha


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--workers", "0"], "invalid workers=0"),
        (["--backend", "gpu"], "'gpu' is not one of"),
        (["--hidden", "12,x"], "comma-separated integers"),
        (["--lr", "-1"], "invalid lr=-1.0"),
        (["--fault", "crash:gpu@step=1"], "unknown TARGET 'gpu'"),
        (["--workers", "2", "--fault", "crash:worker=5@step=1"], "this job has workers 0..1"),
        (["--resume"], "--resume needs --checkpoint-dir"),
        (["--backend", "ray", "--protocol", "lockstep"], "needs shared memory"),
    ],
)
def test_bad_usage_is_one_clear_message_and_exit_2(args, message) -> None:
    run = otpnn("train", *SMALL, *args)
    assert run.returncode == 2
    assert message in run.stderr
    assert "Traceback" not in run.stderr


def test_bad_data_file_is_exit_2_naming_the_file(tmp_path) -> None:
    for name in ("train-images-idx3-ubyte", "train-labels-idx1-ubyte",
                 "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte"):  # fmt: skip
        (tmp_path / name).write_bytes(b"\x00\x00\x08\x03 not really idx")
    run = otpnn("train", "--data-dir", str(tmp_path), "--epochs", "1", "--quiet")
    assert run.returncode == 2
    assert "idx" in run.stderr
    assert "Traceback" not in run.stderr


def test_giving_up_exits_1_and_leaves_a_resumable_checkpoint(tmp_path, reference_sha) -> None:
    ckpt = tmp_path / "ckpt"
    first = otpnn("train", *SMALL, "--epochs", "1", "--workers", "2", "--checkpoint-dir", str(ckpt))
    assert first.returncode == 0, first.stderr
    checkpoint = ckpt / "checkpoint.safetensors"
    saved = checkpoint.read_bytes()

    failed_report = tmp_path / "failed.json"
    proc = subprocess.Popen(
        [sys.executable, "-m", "otpnn", "train", *SMALL, "--epochs", "2", "--workers", "2",
         "--chaos", "1.0", "--checkpoint-dir", str(ckpt), "--resume", "--report",
         str(failed_report)],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    _, stderr = proc.communicate(timeout=90)
    chaos = subprocess.CompletedProcess(proc.args, proc.returncode, "", stderr)
    assert chaos.returncode == 1
    # Nothing left behind: every worker process it started is gone, and so are its segments.
    events = json.loads(failed_report.read_text())["events"]
    pids = {e["pid"] for e in events if e["kind"] == "started"}
    assert len(pids) > 4  # it did restart workers before giving up
    assert not [pid for pid in pids if Path(f"/proc/{pid}").exists()]
    assert not list(Path("/dev/shm").glob(f"otpnn_{proc.pid}_*"))
    assert "gave up" in chaos.stderr
    assert "worker-" in chaos.stderr
    assert str(checkpoint) in chaos.stderr
    assert "Traceback" not in chaos.stderr
    assert checkpoint.read_bytes() == saved  # intact: no step was taken

    report = tmp_path / "r.json"
    resumed = otpnn("train", *SMALL, "--epochs", "2", "--workers", "2", "--checkpoint-dir",
                    str(ckpt), "--resume", "--report", str(report))  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(report.read_text())["final"]["params_sha256"] == reference_sha(epochs=2)


def test_sigterm_checkpoints_and_resume_ends_with_the_uninterrupted_checksum(
    tmp_path, fault_free_sha
) -> None:
    ckpt = tmp_path / "ckpt"
    # A slow step 14 keeps the job busy long enough to be signalled mid-epoch 2.
    proc = subprocess.Popen(
        [sys.executable, "-m", "otpnn", "train", *SMALL, "--epochs", "2", "--workers", "2",
         "--checkpoint-dir", str(ckpt), "--fault", "slow=3:worker=any@step=14"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    checkpoint = ckpt / "checkpoint.safetensors"
    deadline = time.monotonic() + 60
    while not checkpoint.exists() and time.monotonic() < deadline:
        time.sleep(0.05)
    assert checkpoint.exists(), "no epoch-end checkpoint was written"
    time.sleep(0.5)
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 143, err
    assert "stopped by signal" in err

    report = tmp_path / "r.json"
    resumed = otpnn("train", *SMALL, "--epochs", "2", "--workers", "2", "--checkpoint-dir",
                    str(ckpt), "--resume", "--report", str(report))  # fmt: skip
    assert resumed.returncode == 0, resumed.stderr
    assert json.loads(report.read_text())["final"]["params_sha256"] == fault_free_sha


def test_pids_are_logged_at_start_and_in_the_report(tmp_path) -> None:
    report = tmp_path / "r.json"
    loud = [a for a in SMALL if a != "--quiet"]  # actor starts are logged at info level
    run = otpnn("train", *loud, "--epochs", "1", "--workers", "2", "--report", str(report),
                "--log-format", "json")  # fmt: skip
    assert run.returncode == 0, run.stderr
    started = [e for e in json.loads(report.read_text())["events"] if e["kind"] == "started"]
    pids = {e["actor"]: e["pid"] for e in started}
    assert set(pids) == {"worker-0", "worker-1"}
    logged = [json.loads(line) for line in run.stderr.splitlines() if line.startswith("{")]
    assert {
        (e.get("actor"), e.get("pid")) for e in logged if e.get("event") == "actor_started"
    } >= set(pids.items())


@pytest.mark.parametrize(
    ("where", "message"),
    [
        ("missing/r.json", "no directory"),
        ("afile/r.json", "no directory"),
        (".", "is a directory"),
        ("/proc/r.json", "cannot write to /proc"),
    ],
)
def test_report_path_is_checked_before_training(tmp_path: Path, where, message) -> None:
    (tmp_path / "afile").write_text("")
    report = where if where.startswith("/") else str(tmp_path / where)
    run = otpnn("train", *SMALL, "--epochs", "1", "--workers", "1", "--report", report)
    assert run.returncode == 2, run.stderr
    assert message in run.stderr
    assert "Traceback" not in run.stderr
    assert "epoch 1" not in run.stderr + run.stdout  # refused before any training
    assert not (tmp_path / "missing").exists()


def test_resuming_a_finished_run_ends_at_once_with_its_result(tmp_path, fault_free_sha) -> None:
    ckpt = tmp_path / "ckpt"
    common = [*SMALL, "--workers", "2", "--checkpoint-dir", str(ckpt)]
    first = otpnn("train", *common, "--epochs", "2")
    assert first.returncode == 0, first.stderr
    checkpoint = (ckpt / "checkpoint.safetensors").read_bytes()
    report = tmp_path / "r.json"
    again = otpnn("train", *common, "--epochs", "2", "--resume", "--report", str(report))
    assert again.returncode == 0, again.stderr
    assert "finished run (24 steps): nothing left to train" in again.stderr
    data = json.loads(report.read_text())
    assert data["final"]["params_sha256"] == fault_free_sha
    assert data["final"]["steps"] == 24
    assert [row["epoch"] for row in data["epochs"]] == [1, 2]
    assert (ckpt / "checkpoint.safetensors").read_bytes() == checkpoint

    fewer = otpnn("train", *common, "--epochs", "1", "--resume")
    assert fewer.returncode == 2
    assert "past the end of a 1-epoch run (12 steps): resume with --epochs 2 or more" in (
        fewer.stderr
    )
    assert "Traceback" not in fewer.stderr
