"""``otpnn compare``: the table, the verdict and its exit codes, and clear refusals (exit 2)."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from otpnn.cli import main

CONFIG = {
    "dataset": "synthetic",
    "epochs": 2,
    "batch_size": 32,
    "shard_size": 8,
    "lr": 0.2,
    "momentum": 0.5,
    "weight_decay": 0.0,
    "hidden": [16],
    "activation": "relu",
    "seed": 0,
    "dtype": "float32",
    "dataset_name": "synthetic(seed=0, train=256, test=64)",
}


def report(system: str, workers: int, seconds: float, losses=(1.14, 0.056)) -> dict:
    rows = [
        {
            "epoch": e,
            "seconds": seconds,
            "samples_per_second": 256 / seconds,
            "train_loss": loss,
            "train_accuracy": 0.7 + 0.1 * e,
            "test_loss": loss / 2,
            "test_accuracy": 1.0,
        }
        for e, loss in enumerate(losses, 1)
    ]
    return {
        "schema": "otpnn-report/1",
        "system": system,
        "config": {**CONFIG, "workers": workers},
        "environment": {"workers": workers},
        "epochs": rows,
        "restarts": 0,
        "events": [],
        "final": {"test_accuracy": 1.0, "params_sha256": f"{system}-sha", "steps": 16},
    }


def write(tmp_path: Path, name: str, data: object) -> str:
    path = tmp_path / name
    path.write_text(data if isinstance(data, str) else json.dumps(data))
    return str(path)


def run(*args: str):
    return CliRunner().invoke(main, ["compare", *args])


def test_equivalent_reports_give_the_table_speedup_and_exit_0(tmp_path) -> None:
    a = write(tmp_path, "a.json", report("otpnn", 1, 2.0))
    b = write(tmp_path, "b.json", report("otpnn", 2, 1.0))
    c = write(tmp_path, "c.json", report("elixir-reference", 1, 8.0, (1.14 * (1 + 1e-7), 0.056)))
    result = run(a, b, c)
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:2] == ["epoch", "run"]
    two = next(line for line in lines if "otpnn, 2 workers" in line and line.startswith("1 "))
    assert two.split()[-2:] == ["2.00x", "0"]  # half the seconds of the 1-worker run
    assert "bit-identical parameters" in result.output  # the two otpnn runs share a checksum
    assert "EQUIVALENT: elixir-reference, 1 worker" in result.output
    assert result.output.rstrip().endswith("verdict: equivalent")
    assert "note" not in result.output  # same dtype and dataset everywhere


def test_a_dtype_difference_is_noted_once(tmp_path) -> None:
    a = write(tmp_path, "a.json", report("otpnn", 1, 2.0))
    f64 = report("elixir-reference", 1, 8.0)
    f64["config"]["dtype"] = "float64"
    result = run(a, write(tmp_path, "b.json", f64), write(tmp_path, "c.json", f64))
    assert result.exit_code == 0
    assert result.output.count("for a strict check compare float64 runs") == 1


def test_a_loss_off_by_one_percent_is_not_equivalent_exit_1(tmp_path) -> None:
    a = write(tmp_path, "a.json", report("otpnn", 1, 2.0))
    b = write(tmp_path, "b.json", report("elixir-reference", 1, 8.0, (1.14 * 1.01, 0.056)))
    result = run(a, b)
    assert result.exit_code == 1
    assert "NOT EQUIVALENT: elixir-reference" in result.output
    assert "verdict: NOT equivalent" in result.output
    assert run(a, b, "--rtol", "0.02").exit_code == 0  # the tolerance is what decides


def _bad_reports() -> dict[str, tuple[object, str]]:
    good = report("otpnn", 1, 1.0)
    no_loss = copy.deepcopy(good)
    del no_loss["epochs"][1]["train_loss"]
    failed = {**good, "final": {"failed": True, "steps": 3}}
    return {
        "not-json": ("{oops", "not JSON"),
        "array": ([1, 2], "expected a JSON object"),
        "schema": ({**good, "schema": "other/2"}, "schema is 'other/2'"),
        "no-epochs": ({**good, "epochs": []}, "no epoch rows"),
        "row": (no_loss, "epochs[1] lacks a number for train_loss"),
        "failed": (failed, "the run failed"),
        "workers": ({**good, "config": {**CONFIG, "workers": 0}}, "config.workers is 0"),
    }


@pytest.mark.parametrize("case", sorted(_bad_reports()))
def test_malformed_report_is_refused_with_exit_2_naming_the_file(tmp_path, case) -> None:
    data, message = _bad_reports()[case]
    a = write(tmp_path, "good.json", report("otpnn", 1, 1.0))
    bad = write(tmp_path, "bad.json", data)
    result = run(a, bad)
    assert result.exit_code == 2
    assert "bad.json" in result.output
    assert message in result.output
    assert "Traceback" not in result.output


def test_reports_of_different_trainings_are_refused_exit_2(tmp_path) -> None:
    other = report("elixir-reference", 1, 1.0)
    other["config"]["lr"] = 0.1
    a = write(tmp_path, "a.json", report("otpnn", 1, 1.0))
    result = run(a, write(tmp_path, "b.json", other))
    assert result.exit_code == 2
    assert "not comparable" in result.output
    assert "lr: 0.2 vs 0.1" in result.output


def test_a_local_sgd_report_compares_only_with_its_algorithm_and_worker_count(tmp_path) -> None:
    local = report("otpnn", 2, 1.0)
    local["config"].update(algorithm="local-sgd", sync_every=4, warmup_steps=0)
    sync = write(tmp_path, "sync.json", report("elixir-reference", 2, 1.0))  # no such fields
    result = run(sync, write(tmp_path, "local.json", local))
    assert result.exit_code == 2
    assert "algorithm: 'sync' vs 'local-sgd'; sync_every: 8 vs 4" in result.output
    three = copy.deepcopy(local)
    three["config"]["workers"] = 3
    result = run(write(tmp_path, "l2.json", local), write(tmp_path, "l3.json", three))
    assert result.exit_code == 2
    assert "workers: 2 vs 3" in result.output


def test_async_reports_compare_across_worker_counts_but_not_stalenesses(tmp_path) -> None:
    two = report("otpnn", 2, 1.0)
    two["config"].update(algorithm="async", staleness=3)
    three = copy.deepcopy(two)
    three["config"]["workers"] = 3
    result = run(write(tmp_path, "a2.json", two), write(tmp_path, "a3.json", three))
    assert result.exit_code == 0, result.output
    other = copy.deepcopy(two)
    other["config"]["staleness"] = 2
    result = run(write(tmp_path, "s3.json", two), write(tmp_path, "s2.json", other))
    assert result.exit_code == 2
    assert "staleness: 3 vs 2" in result.output


def test_reports_of_different_rate_schedules_are_refused_and_none_means_constant(tmp_path) -> None:
    cosine = report("otpnn", 2, 1.0)
    cosine["config"].update(lr_schedule="cosine", lr_min=0.01, lr_warmup_steps=5)
    old = write(tmp_path, "old.json", report("elixir-reference", 2, 1.0))  # predates schedules
    result = run(old, write(tmp_path, "cosine.json", cosine))
    assert result.exit_code == 2
    assert "lr_schedule: 'constant' vs 'cosine'; lr_warmup_steps: 0 vs 5" in result.output
    step = report("otpnn", 2, 1.0)
    step["config"].update(lr_schedule="step", lr_step_epochs=4, lr_gamma=0.1, lr_warmup_steps=0)
    other = copy.deepcopy(step)
    other["config"].update(lr_step_epochs=1, lr_gamma=0.5)
    result = run(write(tmp_path, "s4.json", step), write(tmp_path, "s1.json", other))
    assert result.exit_code == 2
    assert "lr_step_epochs: 4 vs 1; lr_gamma: 0.1 vs 0.5" in result.output
    # A constant rate is a constant rate, whatever the other schedules' (default) fields say.
    constant = report("otpnn", 2, 1.0)
    constant["config"].update(lr_schedule="constant", lr_step_epochs=4, lr_min=0.0)
    assert run(old, write(tmp_path, "constant.json", constant)).exit_code == 0


def test_missing_file_and_single_report_exit_2(tmp_path) -> None:
    a = write(tmp_path, "a.json", report("otpnn", 1, 1.0))
    missing = run(a, str(tmp_path / "nope.json"))
    assert missing.exit_code == 2
    assert "nope.json: cannot read" in missing.output
    single = run(a)
    assert single.exit_code == 2
    assert "at least two reports" in single.output


def test_plot_writes_a_png(tmp_path) -> None:
    pytest.importorskip("matplotlib")
    a = write(tmp_path, "a.json", report("otpnn", 1, 2.0))
    b = write(tmp_path, "b.json", report("elixir-reference", 2, 4.0))
    c = write(tmp_path, "c.json", report("elixir-reference", 1, 8.0))
    png = tmp_path / "fig" / "cmp.png"
    result = run(a, b, c, "--plot", str(png))
    assert result.exit_code == 0, result.output
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_run_whose_faults_never_fired_is_named_and_exits_3(tmp_path) -> None:
    clean = report("otpnn", 1, 1.0)
    claimed = report("elixir-reference", 2, 0.6)
    spec = "crash:worker=1@shard=3"
    claimed["faults"] = {"planned": [spec], "unfired": [spec]}
    paths = [write(tmp_path, "a.json", clean), write(tmp_path, "b.json", claimed)]
    result = CliRunner().invoke(main, ["compare", *paths])
    assert result.exit_code == 3, result.output
    assert "WARNING: elixir-reference, 2 workers: planned faults never fired" in result.output
    assert "crash:worker=1@shard=3" in result.output
    assert "verdict: equivalent, but planned faults never fired" in result.output
    allowed = CliRunner().invoke(main, ["compare", *paths, "--allow-unfired-faults"])
    assert allowed.exit_code == 0, allowed.output


def test_faults_that_fired_are_no_warning(tmp_path) -> None:
    clean = report("otpnn", 1, 1.0)
    faulty = report("otpnn", 2, 0.6)
    faulty["faults"] = {"planned": ["crash:worker=1@step=3"], "unfired": []}
    paths = [write(tmp_path, "a.json", clean), write(tmp_path, "b.json", faulty)]
    result = CliRunner().invoke(main, ["compare", *paths])
    assert result.exit_code == 0, result.output
    assert "WARNING" not in result.output
