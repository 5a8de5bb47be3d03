"""``otpnn train``'s verdict on a run that trained but is not what was asked: planned faults that
never fired (exit 3) and a checksum other than ``--expect-sha256`` (exit 4)."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from otpnn.run_checks import EXIT_CHECKSUM_MISMATCH, EXIT_UNFIRED_FAULTS, parse_sha256

SMALL = [
    "--dataset", "synthetic", "--synthetic-train", "768", "--synthetic-test", "256",
    "--batch-size", "64", "--shard-size", "16", "--seed", "7", "--quiet", "--epochs", "2",
    "--workers", "2", "--backend", "thread",
]  # fmt: skip


def otpnn(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "otpnn", "train", *SMALL, *args],
        capture_output=True,
        text=True,
        timeout=90,
        check=False,
    )


def test_a_fault_that_never_fires_is_an_error_named_in_stderr_and_the_report(tmp_path) -> None:
    report = tmp_path / "r.json"
    run = otpnn("--fault", "crash:worker=1@step=99999", "--report", str(report))
    assert run.returncode == EXIT_UNFIRED_FAULTS, run.stderr
    assert "never fired: crash:worker=1@step=99999" in run.stderr
    assert "--allow-unfired-faults" in run.stderr
    assert "Traceback" not in run.stderr
    data = json.loads(report.read_text())
    assert data["faults"] == {
        "planned": ["crash:worker=1@step=99999"],
        "unfired": ["crash:worker=1@step=99999"],
    }
    assert not data["final"].get("failed")


def test_allow_unfired_faults_exits_0_and_still_records_them(tmp_path) -> None:
    report = tmp_path / "r.json"
    run = otpnn(
        "--fault", "crash:worker=1@step=99999", "--allow-unfired-faults", "--report", str(report)
    )
    assert run.returncode == 0, run.stderr
    assert json.loads(report.read_text())["faults"]["unfired"] == ["crash:worker=1@step=99999"]


def test_a_fault_that_fires_leaves_nothing_unfired(tmp_path, fault_free_sha) -> None:
    report = tmp_path / "r.json"
    run = otpnn(
        "--fault", "crash:worker=1@step=3", "--expect-sha256", fault_free_sha.upper(),
        "--report", str(report),
    )  # fmt: skip
    assert run.returncode == 0, run.stderr
    data = json.loads(report.read_text())
    assert data["faults"] == {"planned": ["crash:worker=1@step=3"], "unfired": []}
    assert any(e["kind"] == "fault_injected" for e in data["events"])


def test_expect_sha256_names_both_checksums_when_they_differ(fault_free_sha) -> None:
    wrong = "0" * 64
    run = otpnn("--expect-sha256", wrong)
    assert run.returncode == EXIT_CHECKSUM_MISMATCH
    assert wrong in run.stderr
    assert fault_free_sha in run.stderr


def test_expect_sha256_that_is_no_checksum_is_a_usage_error() -> None:
    run = otpnn("--expect-sha256", "abc")
    assert run.returncode == 2
    assert "not a SHA-256" in run.stderr


def test_report_names_the_blas_kernel(tmp_path) -> None:
    report = tmp_path / "r.json"
    run = otpnn("--report", str(report))
    assert run.returncode == 0, run.stderr
    kernel = json.loads(report.read_text())["environment"]["blas_kernel"]
    assert kernel != "unknown"
    assert f"BLAS kernel: {kernel}" in run.stdout


@pytest.mark.parametrize("value", ["", "g" * 64, "a" * 63])
def test_parse_sha256_refuses_what_is_not_64_hex_digits(value: str) -> None:
    with pytest.raises(ValueError, match="not a SHA-256"):
        parse_sha256(value)


@pytest.mark.parametrize(
    ("fault", "kind"),
    [("kill:worker=1@step=3", "worker_killed"), ("exit:worker=1@step=3", "worker_exit"),
     ("crash:worker=1@step=3", "worker_crash")],
)  # fmt: skip
def test_a_lost_worker_is_reported_by_how_it_died(tmp_path, fault, kind) -> None:
    report = tmp_path / "r.json"
    run = otpnn("--backend", "process", "--fault", fault, "--report", str(report))
    assert run.returncode == 0, run.stderr
    lost = [e for e in json.loads(report.read_text())["events"] if e["kind"].startswith("worker_")]
    assert [(e["kind"], e["actor"]) for e in lost] == [(kind, "worker-1")]
