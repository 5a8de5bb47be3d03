"""The state directory as the service finds it: damaged job records (the corruption matrix) and
a directory another service already holds. A damaged record fails its job with the reason and
is set aside; the service starts, stays healthy, and runs the other jobs."""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from service_support import write_record
from structlog.testing import capture_logs

from otpnn.dirlock import DirectoryBusy
from otpnn.service.jobs import JobManager
from otpnn.service.store import StoreClosed

Record = dict[str, Any]


def _edit(change: Callable[[Record], None]) -> Callable[[Path, Record], None]:
    """A corruption that rewrites the record as valid JSON with wrong content."""

    def corrupt(path: Path, record: Record) -> None:
        change(record)
        path.write_text(json.dumps(record))

    return corrupt


def _text(content: Callable[[Record], bytes]) -> Callable[[Path, Record], None]:
    def corrupt(path: Path, record: Record) -> None:
        path.write_bytes(content(record))

    return corrupt


def _replace_with(make: Callable[[Path], None]) -> Callable[[Path, Record], None]:
    def corrupt(path: Path, _record: Record) -> None:
        path.unlink()
        make(path)

    return corrupt


# name: (corruption of jobs/<id>/job.json, what the job's error then says)
CORRUPTIONS: dict[str, tuple[Callable[[Path, Record], None], str]] = {
    "created is a word": (
        _edit(lambda r: r.update(created="yesterday")),
        "created: Input should be a valid number",
    ),
    "created is NaN": (_edit(lambda r: r.update(created=float("nan"))), "created: Input should"),
    "an unknown state": (_edit(lambda r: r.update(state="bogus")), "state: Input should be"),
    "no config, running": (
        _edit(lambda r: (r.pop("config"), r.update(state="running"))),
        "config: Field required",
    ),
    "no options": (_edit(lambda r: r.pop("options")), "options: Field required"),
    "a config the API refuses": (
        _edit(lambda r: r["config"].update(epochs=0)),
        "not a valid job request: epochs: Input should be greater than or equal to 1",
    ),
    "a config field nobody knows": (
        _edit(lambda r: r["config"].update(gpu=True)),
        "not a valid job request: gpu: Extra inputs are not permitted",
    ),
    "an option of the wrong type": (
        _edit(lambda r: r["options"].update(max_restarts="3")),
        "max_restarts: Input should be a valid integer",
    ),
    "step is a string": (_edit(lambda r: r.update(step="3")), "step: Input should be"),
    "negative resumes": (_edit(lambda r: r.update(resumes=-1)), "resumes: Input should be"),
    "metrics without their fields": (
        _edit(lambda r: r.update(metrics={"epoch": 1})),
        "metrics.seconds: Field required",
    ),
    "the id of another job": (
        _edit(lambda r: r.update(id="0123456789ab")),
        "its id '0123456789ab' is not its directory's name",
    ),
    "a JSON array": (_text(lambda r: b"[1, 2]"), "not a JSON object but list"),
    "JSON null": (_text(lambda r: b"null"), "not a JSON object but NoneType"),
    "truncated JSON": (
        _text(lambda r: json.dumps(r).encode()[:40]),
        "job.json is not valid JSON",
    ),
    "an empty file": (_text(lambda r: b""), "job.json is not valid JSON"),
    "not UTF-8": (_text(lambda r: b"\xff\xfe{}"), "job.json is not UTF-8 text"),
    "a directory in its place": (_replace_with(Path.mkdir), "job.json is a directory"),
    "a dangling symlink": (
        _replace_with(lambda p: p.symlink_to(p.parent / "gone.json")),
        "job.json cannot be read (No such file or directory)",
    ),
}


def _what_is_at(path: Path) -> object:
    if path.is_symlink():
        return ("symlink", os.readlink(path))
    return ("file", path.read_bytes()) if path.is_file() else ("directory", path.is_dir())


@pytest.mark.parametrize("corruption", CORRUPTIONS)
def test_a_damaged_record_fails_its_job_and_the_service_carries_on(
    service, fault_free_sha, tmp_path, corruption
) -> None:
    state = tmp_path / "state"
    damaged = write_record(state, "running")
    healthy = write_record(state, "queued", backend="thread", workers=1)
    path = state / "jobs" / damaged["id"] / "job.json"
    corrupt, reason = CORRUPTIONS[corruption]
    corrupt(path, dict(damaged))
    before = _what_is_at(path)

    with capture_logs() as logs:
        svc = service(state_dir=state)
    assert svc.client.get("/metrics").status_code == 200
    status = svc.job(damaged["id"])
    assert status["state"] == "failed"
    assert status["error"].startswith("damaged job record: ")
    assert reason in status["error"]
    (line,) = [e for e in logs if e["event"] == "job_record_damaged"]
    assert line["job"] == damaged["id"]
    assert reason in line["reason"]
    assert _what_is_at(path.with_name("job.json.damaged")) == before  # kept, as it was
    assert json.loads(path.read_text())["state"] == "failed"  # a valid record in its place

    assert svc.wait(healthy["id"])["final"]["params_sha256"] == fault_free_sha
    assert not list(state.rglob("*.tmp"))
    health = svc.client.get("/healthz")
    assert health.status_code == 200
    assert health.json()["jobs"] == {
        "queued": 0, "running": 0, "succeeded": 1, "failed": 1, "cancelled": 0,
    }  # fmt: skip


def test_a_record_set_aside_stays_failed_quietly_after_a_restart(service, tmp_path) -> None:
    state = tmp_path / "state"
    damaged = write_record(state, "running")
    path = state / "jobs" / damaged["id"] / "job.json"
    path.write_text('{"state": "bogus"')
    service(state_dir=state).manager.shutdown(15)
    with capture_logs() as logs:
        svc = service(state_dir=state)
    assert svc.job(damaged["id"])["state"] == "failed"
    assert not [e for e in logs if e["event"] == "job_record_damaged"]
    assert path.with_name("job.json.damaged").read_text() == '{"state": "bogus"'


def test_one_service_per_state_dir(tmp_path) -> None:
    first = JobManager(tmp_path / "state")
    first.start()
    try:
        second = JobManager(tmp_path / "state")
        with pytest.raises(
            DirectoryBusy, match=rf"is in use by another otpnn serve \(pid {os.getpid()}\)"
        ):
            second.start()
        assert second.root is None  # refused before it started anything
    finally:
        first.shutdown(5)
    third = JobManager(tmp_path / "state")  # the lock was given back
    third.start()
    third.shutdown(5)


def test_nothing_is_written_after_shutdown(service, tmp_path) -> None:
    """A job thread that outlived the shutdown's deadline cannot write its record late."""
    svc = service()
    job_id = svc.submit(faults=["slow=2:worker=any@step=2"])
    svc.wait(job_id, lambda j: j["step"] >= 1)
    svc.manager.shutdown(15)
    files = {p: p.stat().st_mtime_ns for p in svc.state_dir.rglob("*") if p.is_file()}
    with pytest.raises(StoreClosed):
        svc.manager.store.save({**svc.manager.status(job_id), "state": "failed"})
    r = svc.client.post("/jobs", json={"dataset": "synthetic"})
    assert r.status_code == 503
    assert r.json()["error"] == "the service is shutting down"
    assert {p: p.stat().st_mtime_ns for p in svc.state_dir.rglob("*") if p.is_file()} == files
