"""otpnn and the Elixir reference (examples/elixir_reference) on the same small problem.

Both start from one `otpnn export-init` (initial parameters, sample order, synthetic data as IDX
files) and must agree: otpnn in float32, Elixir in float64, so per-epoch losses within the
comparison's tolerance (they are in fact within ~1e-7 here), accuracies within 0.005. A worker
crash, exit or kill in the Elixir tree must change nothing: its parameters (float32-cast
checksum) equal the fault-free run's. The shared problem trains at the default learning-rate
schedule, whichever it is; the schedule tests name theirs. Skipped where Elixir's `mix` is not
installed.
"""

from __future__ import annotations

import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from otpnn.compare import compare
from otpnn.interchange import load_export

REPO = Path(__file__).resolve().parents[3]
ELIXIR = REPO / "examples" / "elixir_reference"
PROBLEM = [
    "--dataset", "synthetic", "--synthetic-train", "256", "--synthetic-test", "64",
    "--hidden", "16", "--batch-size", "32", "--shard-size", "8", "--epochs", "2", "--seed", "3",
]  # fmt: skip

pytestmark = pytest.mark.skipif(
    shutil.which("mix") is None,
    reason="Elixir's mix is not installed (apt-get install elixir erlang-dev erlang-xmerl)",
)


def _run(cmd: list[str], cwd: Path, env: dict[str, str] | None = None):
    return subprocess.run(
        cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=180, check=False
    )


@pytest.fixture(scope="session")
def mix_env(tmp_path_factory) -> dict[str, str]:
    """Compile the Mix project once per session into a temporary build dir (repo stays clean)."""
    build = tmp_path_factory.mktemp("elixir_build")
    env = {**os.environ, "MIX_BUILD_PATH": str(build), "MIX_ENV": "dev"}
    done = _run(["mix", "compile", "--warnings-as-errors"], ELIXIR, env)
    assert done.returncode == 0, done.stdout + done.stderr
    return env


@pytest.fixture(scope="session")
def shared(tmp_path_factory, mix_env) -> dict[str, Path]:
    """One export, the otpnn report and the fault-free Elixir report, for every test."""
    tmp = tmp_path_factory.mktemp("compare")
    export = tmp / "export"
    otpnn = [sys.executable, "-m", "otpnn"]
    done = _run([*otpnn, "export-init", str(export), *PROBLEM], REPO)
    assert done.returncode == 0, done.stderr
    train = [*otpnn, "train", *PROBLEM, "--workers", "2", "--backend", "thread", "--quiet"]
    done = _run([*train, "--report", str(tmp / "otpnn.json")], REPO)
    assert done.returncode == 0, done.stderr
    return {"export": export, "otpnn": tmp / "otpnn.json", "elixir": elixir(tmp, export, mix_env)}


def elixir(tmp: Path, export: Path, env: dict[str, str], *faults: str, workers: int = 2) -> Path:
    report = tmp / f"elixir-{len(list(tmp.glob('elixir*.json')))}.json"
    args = ["--workers", str(workers), "--report", str(report)]
    args += [a for f in faults for a in ("--fault", f)]
    done = _run(["mix", "otpnn_ref.train", str(export), *args], ELIXIR, env)
    assert done.returncode == 0, done.stdout + done.stderr
    return report


def test_elixir_reference_agrees_with_otpnn_from_the_same_export(shared) -> None:
    reports, verdict = compare([shared["otpnn"], shared["elixir"]], rtol=1e-3, acc_atol=0.005)
    assert verdict.equivalent, verdict
    assert verdict.pairs[0].train_loss_rel < 1e-5  # float32 vs float64 rounding, nothing more
    elixir_report = reports[1].data
    assert elixir_report["system"] == "elixir-reference"
    assert elixir_report["final"]["steps"] == reports[0].data["final"]["steps"] == 16
    assert elixir_report["restarts"] == 0


@pytest.mark.parametrize(
    "fault", ["crash:worker=1@shard=3", "exit:worker=0@step=6", "kill:worker=any@shard=21"]
)
def test_a_worker_fault_in_the_elixir_tree_changes_nothing(shared, mix_env, fault) -> None:
    faulty = elixir(shared["export"].parent, shared["export"], mix_env, fault)
    data = json.loads(faulty.read_text())
    clean = json.loads(shared["elixir"].read_text())
    kinds = [e["kind"] for e in data["events"]]
    # DOWN of the old worker and worker_up of the new one come from different processes: any order.
    assert kinds[0] == "fault_injected"
    assert sorted(kinds[1:3]) == ["restart", "worker_crash"]
    assert kinds[3:] == ["recovered"]
    assert data["restarts"] == 1
    assert data["faults"] == {"planned": [fault], "unfired": []}
    assert data["final"]["params_sha256"] == clean["final"]["params_sha256"]
    _, verdict = compare([shared["otpnn"], faulty], rtol=1e-3, acc_atol=0.005)
    assert verdict.equivalent, verdict


def test_a_fault_that_never_fires_exits_3_and_compare_says_so(shared, mix_env) -> None:
    """One worker gets every shard, so a fault aimed at worker 1 never fires: the reference
    exits 3 with the report written, the report names the fault, compare warns."""
    report = shared["export"].parent / "elixir-unfired.json"
    args = ["--workers", "1", "--report", str(report), "--fault", "crash:worker=1@shard=3"]
    done = _run(["mix", "otpnn_ref.train", str(shared["export"]), *args], ELIXIR, mix_env)
    assert done.returncode == 3, done.stdout + done.stderr
    assert "never fired: crash:worker=1@shard=3" in done.stderr
    data = json.loads(report.read_text())
    spec = "crash:worker=1@shard=3"
    assert data["faults"] == {"planned": [spec], "unfired": [spec]}
    _, verdict = compare([shared["otpnn"], report], rtol=1e-3, acc_atol=0.005)
    assert verdict.unfired == {"elixir-reference, 1 worker": ["crash:worker=1@shard=3"]}


def test_one_elixir_worker_computes_the_same_as_two(shared, mix_env) -> None:
    one = elixir(shared["export"].parent, shared["export"], mix_env, workers=1)
    clean = json.loads(shared["elixir"].read_text())
    assert json.loads(one.read_text())["final"]["params_sha256"] == clean["final"]["params_sha256"]


def test_bad_arguments_exit_2(mix_env, tmp_path) -> None:
    missing = _run(["mix", "otpnn_ref.train", str(tmp_path / "none")], ELIXIR, mix_env)
    assert missing.returncode == 2
    assert "manifest.json" in missing.stderr
    bad_fault = _run(
        ["mix", "otpnn_ref.train", str(tmp_path), "--fault", "melt:worker=0@step=1"],
        ELIXIR,
        mix_env,
    )
    assert bad_fault.returncode == 2
    assert "bad fault spec" in bad_fault.stderr


def test_in_float64_on_both_sides_they_agree_to_rounding_of_the_sums(tmp_path, mix_env) -> None:
    """Same dtype on both sides: only the summation order inside a GEMM differs, so losses agree
    to ~1e-15, and a much stricter tolerance than float32-vs-float64's holds."""
    f64 = [*PROBLEM, "--dtype", "float64"]
    otpnn = [sys.executable, "-m", "otpnn"]
    assert _run([*otpnn, "export-init", str(tmp_path / "ex"), *f64], REPO).returncode == 0
    train = [*otpnn, "train", *f64, "--workers", "1", "--backend", "thread", "--quiet"]
    done = _run([*train, "--report", str(tmp_path / "otpnn.json")], REPO)
    assert done.returncode == 0, done.stderr
    report = elixir(tmp_path, tmp_path / "ex", mix_env)
    _, verdict = compare([tmp_path / "otpnn.json", report], rtol=1e-10, acc_atol=0.0)
    assert verdict.equivalent, verdict
    assert verdict.notes == []  # same dtype, same dataset: nothing to qualify


SCHEDULES = {
    "cosine": ["--lr-schedule", "cosine", "--lr-min", "0.01"],
    "step-warmup": [
        "--lr-schedule", "step", "--lr-step-epochs", "1", "--lr-gamma", "0.3",
        "--lr-warmup-steps", "5",
    ],
}  # fmt: skip


@pytest.mark.parametrize("schedule", SCHEDULES.values(), ids=SCHEDULES.keys())
def test_the_elixir_reference_follows_the_exported_learning_rates(
    tmp_path, mix_env, schedule
) -> None:
    """The reference steps at the exported rate of each update: a scheduled run agrees with
    otpnn as closely as a constant one (a constant rate would be off by far more)."""
    problem = [*PROBLEM, *schedule]
    otpnn = [sys.executable, "-m", "otpnn"]
    assert _run([*otpnn, "export-init", str(tmp_path / "ex"), *problem], REPO).returncode == 0
    lrs = load_export(tmp_path / "ex").lrs
    assert len(set(lrs.tolist())) > 2  # a schedule indeed, not a constant rate
    train = [*otpnn, "train", *problem, "--workers", "2", "--backend", "thread", "--quiet"]
    done = _run([*train, "--report", str(tmp_path / "otpnn.json")], REPO)
    assert done.returncode == 0, done.stderr
    report = elixir(tmp_path, tmp_path / "ex", mix_env)
    reports, verdict = compare([tmp_path / "otpnn.json", report], rtol=1e-3, acc_atol=0.005)
    assert verdict.equivalent, verdict
    assert verdict.pairs[0].train_loss_rel < 1e-5  # float32 vs float64 rounding, nothing more
    assert reports[1].data["config"]["lr_schedule"] == schedule[1]


def _truncate(export: Path) -> None:
    path = export / "lr.bin"
    path.write_bytes(path.read_bytes()[:-8])


def _nan(export: Path) -> None:
    path = export / "lr.bin"
    data = path.read_bytes()
    path.write_bytes(data[:16] + struct.pack("<d", float("nan")) + data[24:])


def _unnamed(export: Path) -> None:
    manifest = json.loads((export / "manifest.json").read_text())
    del manifest["lr"]
    manifest["config"].update(lr_schedule="cosine", lr_min=0.0)
    (export / "manifest.json").write_text(json.dumps(manifest))


@pytest.mark.parametrize(
    ("damage", "says"),
    [
        (_truncate, "lr.bin: not the otpnn rate file of this export"),
        (_nan, "lr.bin: not the otpnn rate file of this export"),
        (_unnamed, 'manifest.json: the config\'s learning rate is scheduled (lr_schedule "cosine"'),
    ],
    ids=["truncated", "nan", "scheduled-without-file"],
)
def test_a_bad_rate_file_is_refused_with_one_message_exit_2(
    shared, mix_env, tmp_path, damage, says
) -> None:
    export = tmp_path / "export"
    shutil.copytree(shared["export"], export)
    damage(export)
    args = ["--workers", "1", "--report", str(tmp_path / "never.json")]
    done = _run(["mix", "otpnn_ref.train", str(export), *args], ELIXIR, mix_env)
    assert done.returncode == 2, done.stdout + done.stderr
    assert says in done.stderr
    assert "** (" not in done.stderr  # one message, no Elixir exception trace
    assert not (tmp_path / "never.json").exists()
