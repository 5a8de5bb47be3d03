"""``otpnn train --algorithm local-sgd`` as a user runs it, and its misuses."""

from __future__ import annotations

import json

import pytest
from training_support import reference_sha

from tests.otpnn.training.test_cli_train import SMALL, otpnn

LOCAL = ["--algorithm", "local-sgd", "--sync-every", "4", "--warmup-steps", "3"]


def test_the_report_records_the_algorithm_and_has_the_references_bits(tmp_path) -> None:
    report = tmp_path / "r.json"
    run = otpnn("train", *SMALL, *LOCAL, "--epochs", "2", "--workers", "3", "--report",
                str(report))  # fmt: skip
    assert run.returncode == 0, run.stderr
    data = json.loads(report.read_text())
    config = data["config"]
    assert (config["algorithm"], config["sync_every"], config["warmup_steps"]) == (
        "local-sgd", 4, 3,
    )  # fmt: skip
    assert data["environment"]["protocol"] == "local-sgd-lockstep"
    expected = reference_sha(workers=3, algorithm="local-sgd", sync_every=4, warmup_steps=3)
    assert data["final"]["params_sha256"] == expected
    assert data["final"]["steps"] == 24


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--sync-every", "4"], "invalid sync_every=4: expected 8 (it applies to algorithm"),
        (["--algorithm", "hogwild"], "'hogwild' is not one of 'sync', 'local-sgd', 'async'"),
        (["--algorithm", "local-sgd", "--sync-every", "0"], "invalid sync_every=0"),
    ],
)
def test_misuse_is_one_clear_message_and_exit_2(args, message) -> None:
    run = otpnn("train", *SMALL, *args)
    assert run.returncode == 2
    assert message in run.stderr
    assert "Traceback" not in run.stderr
