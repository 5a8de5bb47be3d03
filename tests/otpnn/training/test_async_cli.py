"""``otpnn train --algorithm async`` as a user runs it, and its misuses."""

from __future__ import annotations

import json

import pytest
from training_support import reference_sha

from tests.otpnn.training.test_cli_train import SMALL, otpnn

ASYNC = ["--algorithm", "async", "--staleness", "3", "--lr", "0.1"]


def test_the_report_records_the_algorithm_and_has_the_references_bits(tmp_path) -> None:
    report = tmp_path / "r.json"
    run = otpnn("train", *SMALL, *ASYNC, "--epochs", "2", "--workers", "3", "--report",
                str(report), "--fault", "kill:worker=2@step=10")  # fmt: skip
    assert run.returncode == 0, run.stderr
    data = json.loads(report.read_text())
    config = data["config"]
    assert (config["algorithm"], config["staleness"]) == ("async", 3)
    assert data["environment"]["protocol"] == "async-lockstep"
    assert data["final"]["params_sha256"] == reference_sha(algorithm="async", staleness=3, lr=0.1)
    assert data["final"]["steps"] == 24
    killed = [(e["actor"], e["step"]) for e in data["events"] if e["kind"] == "fault_injected"]
    assert killed == [("worker-2", 10)]
    assert [e["actor"] for e in data["events"] if e["kind"] == "worker_killed"] == ["worker-2"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--algorithm", "async", "--staleness", "0"],
         "invalid staleness=0: expected an integer >= 1 (update t's gradient is taken on the "
         "parameters after update t-staleness; 1 is sync SGD"),
        (["--staleness", "4"], "invalid staleness=4: expected 2 (it applies to algorithm 'async'"),
        ([*ASYNC, "--sync-every", "4"], "invalid sync_every=4: expected 8 (it applies to"),
        ([*ASYNC, "--protocol", "nope"], "Invalid value for '--protocol': 'nope' is not one of"),
        (["--algorithm", "async", "--staleness", "x"], "'x' is not a valid integer"),
    ],
)  # fmt: skip
def test_misuse_is_one_clear_message_and_exit_2(args, message) -> None:
    run = otpnn("train", *SMALL, *args)
    assert run.returncode == 2
    assert message in run.stderr
    assert "Traceback" not in run.stderr


def test_async_trains_with_its_own_defaults_records_them_and_resumes_with_them(tmp_path) -> None:
    """No --momentum or --lr-warmup-steps: async's (0, and 100 updates at staleness 2) apply,
    the report's config says so, and a resume at the defaults ends with the reference's bits."""
    run = [*SMALL, "--algorithm", "async", "--workers", "2", "--backend", "thread",
           "--checkpoint-dir", str(tmp_path / "ck")]  # fmt: skip
    first = otpnn("train", *run, "--epochs", "1", "--report", str(tmp_path / "1.json"))
    assert first.returncode == 0, first.stderr
    config = json.loads((tmp_path / "1.json").read_text())["config"]
    assert (config["lr"], config["momentum"], config["lr_warmup_steps"]) == (0.2, 0.0, 100)

    other = otpnn("train", *run, "--epochs", "2", "--resume", "--momentum", "0.5")
    assert other.returncode == 2
    assert "momentum: checkpoint 0.0 vs now 0.5" in other.stderr
    assert "pass --momentum 0.0 to match" in other.stderr

    resumed = otpnn(
        "train", *run, "--epochs", "2", "--resume", "--report", str(tmp_path / "2.json")
    )
    assert resumed.returncode == 0, resumed.stderr
    final = json.loads((tmp_path / "2.json").read_text())["final"]
    assert final["params_sha256"] == reference_sha(algorithm="async", momentum=0.0,
                                                   lr_warmup_steps=100)  # fmt: skip


def test_the_help_states_the_per_algorithm_defaults() -> None:
    help_text = " ".join(otpnn("train", "--help").stdout.split())
    assert "SGD momentum [default: 0.5; async with staleness S >= 2: 0;" in help_text
    assert "[default: 0; async: 100 x (S - 1)]" in help_text
