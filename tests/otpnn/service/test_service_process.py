"""``otpnn serve`` as a user runs it: a real subprocess, killed with SIGKILL or stopped with
SIGTERM mid-job, then started again on the same state dir."""

from __future__ import annotations

import json
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from service_support import write_record

from otpnn.cli_serve import serve

# Parks the job at step 12 (after the step-10 checkpoint) long enough to kill the service.
PARKED = {"faults": ["slow=30:worker=any@step=12"], "checkpoint_every": 5}


class ServeProcess:
    def __init__(self, state_dir: Path, *args: str) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = s.getsockname()[1]
        self.url = f"http://127.0.0.1:{port}"
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "otpnn", "serve", "--port", str(port),
             "--state-dir", str(state_dir), *args],
            stderr=subprocess.PIPE,
            text=True,
        )  # fmt: skip
        self.client = httpx.Client(base_url=self.url, timeout=10)
        deadline = time.monotonic() + 30
        while True:
            assert self.proc.poll() is None, self.proc.communicate()[1]
            try:
                if self.client.get("/healthz").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            assert time.monotonic() < deadline, "the service did not come up"
            time.sleep(0.05)

    def wait_job(self, job_id: str, until, timeout: float = 60) -> dict:
        deadline = time.monotonic() + timeout
        while not until(status := self.client.get(f"/jobs/{job_id}").json()):
            assert time.monotonic() < deadline, status
            time.sleep(0.05)
        return status

    def stop(self, sig: int = signal.SIGTERM, timeout: float = 30) -> tuple[int, str, float]:
        t0 = time.monotonic()
        self.proc.send_signal(sig)
        _, err = self.proc.communicate(timeout=timeout)
        self.client.close()
        return self.proc.returncode, err, time.monotonic() - t0


@pytest.fixture
def serve_process(tmp_path: Path) -> Iterator:
    started: list[ServeProcess] = []

    def start(*args: str) -> ServeProcess:
        started.append(ServeProcess(tmp_path / "state", *args))
        return started[-1]

    yield start
    for p in started:
        if p.proc.poll() is None:
            p.stop(signal.SIGKILL)


def _gone(pid: int) -> bool:
    """Not running: no such process, or a zombie waiting for a reaper."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except FileNotFoundError:
        return True
    return stat.rsplit(")", 1)[1].split()[0] == "Z"


def _submit(service: ServeProcess, job_config: dict) -> str:
    r = service.client.post("/jobs", json={**job_config, **PARKED})
    assert r.status_code == 201, r.text
    return r.json()["id"]


def test_sigkill_mid_job_then_restart_resumes_to_the_same_checksum(
    serve_process, job_config, fault_free_sha
) -> None:
    first = serve_process()
    job_id = _submit(first, job_config)
    parked = first.wait_job(job_id, lambda j: j["step"] >= 11)
    pids = list(parked["pids"].values())
    assert len(pids) == 2
    first.stop(signal.SIGKILL)
    deadline = time.monotonic() + 5
    while not all(_gone(p) for p in pids) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert all(_gone(p) for p in pids), "a worker of the killed service survived it"

    second = serve_process()
    done = second.wait_job(job_id, lambda j: j["state"] in ("succeeded", "failed"))
    assert done["state"] == "succeeded", done["error"]
    assert done["resumes"] == 1
    assert done["final"]["params_sha256"] == fault_free_sha
    report = second.client.get(f"/jobs/{job_id}/report").json()
    assert report["final"]["params_sha256"] == fault_free_sha
    assert not any(e["kind"] == "fault_injected" for e in report["events"])  # not fired again
    assert second.stop()[0] == 0


def test_sigterm_checkpoints_exits_0_and_the_job_resumes(
    serve_process, job_config, fault_free_sha, tmp_path
) -> None:
    first = serve_process("--log-format", "json")
    job_id = _submit(first, job_config)
    first.wait_job(job_id, lambda j: j["step"] >= 11)
    code, err, seconds = first.stop(signal.SIGTERM)
    assert code == 0, err
    assert seconds < 15
    lines = [json.loads(line) for line in err.splitlines() if line.startswith("{")]
    assert any(e.get("job") == job_id and e["event"] == "job_interrupted" for e in lines)
    assert {"event": "service_listening", "url": first.url} in [
        {k: e.get(k) for k in ("event", "url")} for e in lines
    ]
    assert all(line.startswith("{") for line in err.splitlines() if line.strip())
    access = [e for e in lines if e["event"] == "http_request"]  # uvicorn's access log, as JSON
    assert any(
        e["method"] == "POST" and e["path"] == "/jobs" and e["status"] == 201 for e in access
    )
    assert any(e["path"] == f"/jobs/{job_id}" and e["status"] == 200 for e in access)
    job_dir = tmp_path / "state" / "jobs" / job_id
    assert json.loads((job_dir / "job.json").read_text())["state"] == "running"
    assert (job_dir / "ckpt" / "checkpoint.safetensors").is_file()

    second = serve_process()
    done = second.wait_job(job_id, lambda j: j["state"] in ("succeeded", "failed"))
    assert done["state"] == "succeeded", done["error"]
    assert done["final"]["params_sha256"] == fault_free_sha
    assert second.stop()[0] == 0


def test_token_file_is_required_and_checked(serve_process, tmp_path) -> None:
    token = tmp_path / "token"
    token.write_text("short\n")
    bad = subprocess.run(
        [sys.executable, "-m", "otpnn", "serve", "--token-file", str(token)],
        capture_output=True, text=True, timeout=30, check=False,
    )  # fmt: skip
    assert bad.returncode == 2
    assert "at least 16 characters" in bad.stderr
    token.write_text("0123456789abcdef0123\n")
    service = serve_process("--token-file", str(token))
    assert service.client.get("/jobs").status_code == 401
    ok = service.client.get("/jobs", headers={"Authorization": "Bearer 0123456789abcdef0123"})
    assert ok.status_code == 200
    assert service.stop()[0] == 0


def _serve_once(*args: str) -> subprocess.CompletedProcess:
    """``otpnn serve`` expected to stop by itself (refused at start)."""
    return subprocess.run(
        [sys.executable, "-m", "otpnn", "serve", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip


def test_a_second_service_on_the_same_state_dir_exits_2(serve_process, tmp_path) -> None:
    first = serve_process()
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        free_port = s.getsockname()[1]
    second = _serve_once("--port", str(free_port), "--state-dir", str(tmp_path / "state"))
    assert second.returncode == 2, second.stderr
    assert second.stderr.splitlines() == [
        f"Error: --state-dir {tmp_path / 'state'} is in use by another otpnn serve "
        f"(pid {first.proc.pid}); stop that one or pass another"
    ]
    assert first.client.get("/healthz").status_code == 200
    assert first.stop()[0] == 0


def test_a_service_that_cannot_have_its_port_touches_no_job(serve_process, tmp_path) -> None:
    first = serve_process()
    other = tmp_path / "other"
    job = write_record(other, "running")
    record = other / "jobs" / job["id"] / "job.json"
    before = record.read_bytes()
    port = httpx.URL(first.url).port
    second = _serve_once("--port", str(port), "--state-dir", str(other))
    assert second.returncode == 2, second.stderr
    assert second.stderr.splitlines()[-1] == (
        f"Error: cannot listen on 127.0.0.1:{port}: Address already in use"
    )
    assert "job_requeued" not in second.stderr
    assert record.read_bytes() == before
    assert first.stop()[0] == 0


@pytest.mark.parametrize("verbose", [False, True])
def test_a_failing_job_is_one_log_line_unless_verbose(serve_process, job_config, verbose) -> None:
    service = serve_process("--log-format", "json", *(["--verbose"] if verbose else []))
    # A thread worker (in the service's process) crashes, and the tree may not restart it.
    doomed = {"backend": "thread", "faults": ["crash:worker=0@step=2"], "max_restarts": 0}
    r = service.client.post("/jobs", json={**job_config, **doomed})
    job_id = r.json()["id"]
    service.wait_job(job_id, lambda j: j["state"] == "failed")
    code, err, _ = service.stop()
    assert code == 0, err
    lines = [json.loads(line) for line in err.splitlines()]  # every line is one JSON object
    (finished,) = [e for e in lines if e["event"] == "job_finished"]
    assert finished["state"] == "failed"
    assert "the supervision tree gave up" in finished["error"]
    assert any(e["event"] == "actor_crashed" for e in lines), err
    tracebacks = [e for e in lines if "exception" in e]
    assert bool(tracebacks) == verbose, err
    assert ("Traceback (most recent call last)" in err) == verbose, err


@pytest.mark.parametrize("option", ["--read-timeout", "--shutdown-timeout"])
@pytest.mark.parametrize("value", ["nan", "inf"])
def test_timeouts_must_be_finite(tmp_path, option, value) -> None:
    result = CliRunner().invoke(serve, [option, value, "--state-dir", str(tmp_path / "state")])
    assert result.exit_code == 2, result.output
    assert f"Invalid value for '{option}'" in result.output
    assert not (tmp_path / "state").exists()  # refused before anything was made
