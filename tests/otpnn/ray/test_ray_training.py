"""The trainer on Ray workers: the core guarantee (same checksum as thread, process and the
serial reference), recovery from a killed Ray worker, the CLI."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest
import structlog

pytest.importorskip("ray", reason="Ray is an optional extra: pip install 'otpnn[ray]'")

from click.testing import CliRunner
from ray_session import training_helpers

from otpnn.cli import main
from otpnn.faults import parse_fault
from otpnn.training import JobOptions, TrainingJob
from supervision.ray import connect

helpers = training_helpers()


@pytest.fixture
def in_process_cli() -> Iterator[CliRunner]:
    """The CLI run in this process configures logging and signal handlers for the whole
    process: put them back, or later tests that capture logs see nothing."""
    logging_config = structlog.get_config()
    handlers = {sig: signal.getsignal(sig) for sig in (signal.SIGINT, signal.SIGTERM)}
    yield CliRunner()
    structlog.configure(**logging_config)
    for sig, handler in handlers.items():
        signal.signal(sig, handler)


def test_same_checksum_for_thread_process_and_ray() -> None:
    reference = helpers.reference_sha()
    shas = {}
    for backend, workers in (("thread", 2), ("process", 2), ("ray", 2)):
        sha, job = helpers.run_job(helpers.config(workers=workers, backend=backend))
        assert job.state.restarts == 0
        shas[backend] = sha
    assert shas == {"thread": reference, "process": reference, "ray": reference}


def _kill_ray_kill(handle) -> None:
    handle.kill()  # ray.kill(no_restart=True) underneath


def _kill_sigkill(handle) -> None:
    os.kill(handle.pid, signal.SIGKILL)


@pytest.mark.parametrize("kill", [_kill_ray_kill, _kill_sigkill], ids=["ray.kill", "kill-9"])
def test_killed_ray_worker_is_restarted_and_the_checksum_holds(kill) -> None:
    # worker-1 sleeps through step 4: it is surely holding shards when it is killed.
    slow = parse_fault("slow=0.5:worker=1@step=4")
    job = TrainingJob(
        helpers.config(workers=2, backend="ray"), helpers.dataset(), JobOptions(faults=(slow,))
    )
    job.start()
    try:
        victim = job.registry.whereis("worker-1")
        while job.progress.step < 3:
            time.sleep(0.005)
        time.sleep(0.1)  # into step 4's sleep
        kill(victim)
        result = job.wait(timeout=120)
    finally:
        job.stop()
    assert helpers.params_sha256(result["params"]) == helpers.reference_sha()
    assert job.state.restarts_by_actor() == {"worker-1": 1}
    lost = [e for e in job.state.events() if e.kind in ("worker_crash", "worker_killed")]
    assert [(e.actor, e.step, e.pid) for e in lost] == [("worker-1", 4, victim.pid)]
    if kill is _kill_ray_kill:
        assert victim.exit_reason == "killed"
    else:  # Ray's own account of the death reaches the supervisor
        assert type(victim.exit_reason).__name__ == "ActorDiedError"
        assert "worker process has died" in str(victim.exit_reason)
    assert job.registry.whereis("worker-1") is None  # the tree is stopped


def test_cli_trains_on_ray_with_the_reference_checksum(in_process_cli) -> None:
    cfg = helpers.config()
    args = ["train", "--dataset", "synthetic", "--backend", "ray", "--workers", "2", "--quiet"]
    args += ["--synthetic-train", str(cfg.synthetic_train), "--synthetic-test"]
    args += [str(cfg.synthetic_test), "--epochs", str(cfg.epochs), "--seed", str(cfg.seed)]
    args += ["--shard-size", str(cfg.effective_shard_size)]
    result = in_process_cli.invoke(main, args)
    assert result.exit_code == 0, result.output
    assert f"params sha256 {helpers.reference_sha()}" in result.output


def test_cli_without_ray_is_a_usage_error(monkeypatch, in_process_cli) -> None:
    import otpnn.training.options

    real = otpnn.training.options.importlib.util.find_spec
    monkeypatch.setattr(
        otpnn.training.options.importlib.util,
        "find_spec",
        lambda name, *a: None if name == "ray" else real(name, *a),
    )
    result = in_process_cli.invoke(main, ["train", "--dataset", "synthetic", "--backend", "ray"])
    assert result.exit_code == 2
    assert "pip install 'otpnn[ray]'" in result.output


def test_ray_address_needs_the_ray_backend(in_process_cli) -> None:
    args = ["train", "--dataset", "synthetic", "--backend", "thread", "--ray-address", "h:6379"]
    result = in_process_cli.invoke(main, args)
    assert result.exit_code == 2
    assert "--ray-address needs --backend ray" in result.output


def test_an_address_with_no_cluster_is_one_clear_error_at_once() -> None:
    """Not Ray's minute of retries and a traceback: exit 2 naming the address (a fresh process:
    this one is connected to the session's Ray already)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        address = f"127.0.0.1:{s.getsockname()[1]}"  # nothing listens there once closed
    args = ["train", "--backend", "ray", "--ray-address", address, "--dataset", "synthetic"]
    done = subprocess.run(
        [sys.executable, "-m", "otpnn", *args, "--quiet"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert f"no Ray head node answers at {address}" in done.stderr
    assert "Traceback" not in done.stderr


def test_json_logs_stay_json_with_rays_own_warnings() -> None:
    """Ray warns through a stderr handler of its own (e.g. about token authentication when it
    starts a local cluster); in a JSON log that line is one more JSON object (a fresh process:
    this one is connected to the session's Ray already)."""
    env = {k: v for k, v in os.environ.items() if k != "RAY_AUTH_MODE"}  # Ray says what it does
    args = ["train", "--backend", "ray", "--workers", "2", "--dataset", "synthetic"]
    done = subprocess.run(
        [sys.executable, "-m", "otpnn", *args, "--epochs", "1", "--log-format", "json"],
        capture_output=True, text=True, timeout=120, env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr
    events = [json.loads(line) for line in done.stderr.splitlines()]  # every line is JSON
    assert any(e["event"] == "epoch_done" for e in events)
    assert all(e["level"] != "info" for e in events if e.get("logger", "").startswith("ray"))


def test_a_connected_ray_is_reused_and_left_running() -> None:
    import ray

    connection = connect(num_cpus=2)
    assert not connection.owned
    connection.close()
    assert ray.is_initialized()
