"""A job's lifecycle when things go wrong around the training: whatever fails ends the job
``failed`` with the reason and frees its slot; a stop that comes after the trainer finished
leaves the job ``succeeded``; after a restart nothing of it is run again."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from pathlib import Path

import pykka
import pytest
from service_support import write_record

from otpnn.service import lifecycle
from otpnn.training import coordinator
from otpnn.training.job import TrainingJob

# Long enough a job that the test can break its state dir before it ends.
SLOW = {"faults": ["slow=1.5:worker=any@step=3"]}


def _model_is_a_directory(job_dir: Path, _mp: pytest.MonkeyPatch) -> None:
    (job_dir / "model.safetensors").mkdir()  # a stand-in for a full disk


def _report_is_a_directory(job_dir: Path, _mp: pytest.MonkeyPatch) -> None:
    (job_dir / "report.json").mkdir()


def _summary_raises(_job_dir: Path, mp: pytest.MonkeyPatch) -> None:
    def boom(*_args: object) -> None:
        raise RuntimeError("boom")

    mp.setattr(lifecycle, "final_summary", boom)


BREAKAGES: dict[str, tuple[Callable[[Path, pytest.MonkeyPatch], None], str]] = {
    "the model cannot be saved": (_model_is_a_directory, "saving the model failed: Is a directory"),
    "the report cannot be written": (
        _report_is_a_directory,
        "writing the report failed: Is a directory",
    ),
    "an unexpected error": (_summary_raises, "RuntimeError: boom"),
}


@pytest.mark.parametrize("breakage", BREAKAGES)
def test_a_failure_after_training_fails_the_job_and_the_next_one_runs(
    service, fault_free_sha, tmp_path, monkeypatch, breakage
) -> None:
    state = tmp_path / "state"
    svc = service(state_dir=state)
    doomed, queued = svc.submit(**SLOW), svc.submit()
    break_it, error = BREAKAGES[breakage]
    break_it(state / "jobs" / doomed, monkeypatch)

    failed = svc.wait(doomed)
    assert failed["state"] == "failed", failed
    assert failed["error"] == error
    assert str(state) not in failed["error"]  # the server's paths stay in its log
    assert json.loads((state / "jobs" / doomed / "job.json").read_text())["state"] == "failed"
    assert not list(state.rglob("*.tmp"))  # no half-written file left behind
    monkeypatch.undo()  # the next job saves normally
    assert svc.wait(queued)["final"]["params_sha256"] == fault_free_sha  # the slot was freed
    again = svc.client.post(f"/jobs/{doomed}/cancel")
    assert again.status_code == 409
    assert again.json()["error"] == f"job {doomed} already failed"
    assert svc.client.get("/healthz").json()["jobs"] == {
        "queued": 0, "running": 0, "succeeded": 1, "failed": 1, "cancelled": 0,
    }  # fmt: skip
    svc.manager.shutdown(15)

    restarted = service(state_dir=state)
    assert restarted.job(doomed)["state"] == "failed"
    assert restarted.job(doomed)["resumes"] == 0
    assert restarted.client.get("/healthz").json()["jobs"]["running"] == 0


def test_a_record_that_cannot_be_written_at_the_end_does_not_hold_the_slot(
    service, fault_free_sha, tmp_path
) -> None:
    state = tmp_path / "state"
    svc = service(state_dir=state)
    unrecorded, queued = svc.submit(**SLOW), svc.submit()
    svc.wait(unrecorded, lambda j: j["step"] >= 1)
    record = state / "jobs" / unrecorded / "job.json"
    record.unlink()
    record.mkdir()  # its final state cannot be written
    assert svc.wait(unrecorded)["state"] == "succeeded"  # what the service knows while it runs
    assert svc.wait(queued)["final"]["params_sha256"] == fault_free_sha
    svc.manager.shutdown(15)

    restarted = service(state_dir=state)  # the record on disk is damaged: failed, not resumed
    status = restarted.job(unrecorded)
    assert status["state"] == "failed"
    assert status["error"] == "damaged job record: job.json is a directory"
    assert restarted.job(queued)["state"] == "succeeded"


@pytest.fixture
def last_evaluation(monkeypatch) -> tuple[threading.Event, threading.Event]:
    """(evaluating, stopping): the coordinator's evaluation of epoch 2 of 2 waits, with
    ``evaluating`` set, until the job's waiter has been told to stop (the waiter is then in
    TrainingJob.stop, waiting for the coordinator), and ``stopping`` is set."""
    evaluating, stopping = threading.Event(), threading.Event()
    calls = []
    evaluate, stop = coordinator.evaluate, TrainingJob.stop

    def last_evaluation_waits(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            evaluating.set()
            stopping.wait(30)
        return evaluate(*args, **kwargs)

    def noted_stop(self: TrainingJob, *args, **kwargs) -> None:
        stopping.set()
        stop(self, *args, **kwargs)

    monkeypatch.setattr(coordinator, "evaluate", last_evaluation_waits)
    monkeypatch.setattr(TrainingJob, "stop", noted_stop)
    return evaluating, stopping


def test_sigterm_during_the_last_evaluation_records_the_job_succeeded(
    service, fault_free_sha, tmp_path, monkeypatch, last_evaluation
) -> None:
    """What SIGTERM does (manager.shutdown) while the coordinator evaluates the last epoch:
    the trainer finishes, so the job is done, not left 'running' to be resumed past its end."""
    evaluating, _ = last_evaluation
    state = tmp_path / "state"
    svc = service(state_dir=state)
    job_id = svc.submit()
    assert evaluating.wait(30)
    svc.manager.shutdown(15)

    assert pykka.ActorRegistry.get_all() == []  # nothing of the job is left to write anything
    assert not [t for t in threading.enumerate() if t.name == f"job-{job_id}"]
    record = json.loads((state / "jobs" / job_id / "job.json").read_text())
    assert record["state"] == "succeeded"
    assert record["final"]["params_sha256"] == fault_free_sha
    assert (state / "jobs" / job_id / "model.safetensors").is_file()

    monkeypatch.undo()
    restarted = service(state_dir=state)
    status = restarted.job(job_id)
    assert (status["state"], status["step"], status["total_steps"]) == ("succeeded", 24, 24)
    assert status["resumes"] == 0


def test_cancel_during_the_last_evaluation_keeps_the_finished_result(
    service, fault_free_sha, last_evaluation
) -> None:
    """A cancel that arrives while the last epoch is evaluated is too late: the job is done."""
    evaluating, _ = last_evaluation
    svc = service()
    job_id = svc.submit()
    assert evaluating.wait(30)
    assert svc.client.post(f"/jobs/{job_id}/cancel").status_code == 200
    status = svc.wait(job_id)
    assert status["state"] == "succeeded"
    assert status["final"]["params_sha256"] == fault_free_sha


def test_a_job_left_running_with_its_final_checkpoint_completes_at_once(
    service, fault_free_sha, tmp_path
) -> None:
    """What a service stopped after a job's last commit but before recording it leaves behind:
    the restarted service finishes the job from its final checkpoint, training nothing more."""
    state = tmp_path / "state"
    first = service(state_dir=state)
    job_id = first.submit()
    assert first.wait(job_id)["state"] == "succeeded"
    first.manager.shutdown(15)
    job_dir = state / "jobs" / job_id
    record = json.loads((job_dir / "job.json").read_text())
    record.update(state="running", finished=None, final=None)
    (job_dir / "job.json").write_text(json.dumps(record))
    (job_dir / "model.safetensors").unlink()

    second = service(state_dir=state)
    status = second.wait(job_id)
    assert (status["state"], status["step"], status["total_steps"]) == ("succeeded", 24, 24)
    assert status["final"]["params_sha256"] == fault_free_sha
    assert status["resumes"] == 1
    assert (job_dir / "model.safetensors").is_file()


def test_a_tree_that_gives_up_fails_the_job_naming_its_checkpoint_but_no_server_path(
    service,
) -> None:
    svc = service()
    job_id = svc.submit(faults=["crash:worker=0@step=5"], max_restarts=0, checkpoint_every=2)
    status = svc.wait(job_id)
    assert status["state"] == "failed"
    assert status["error"].startswith("training failed: the supervision tree gave up")
    assert (
        f"last checkpoint: <state dir>/jobs/{job_id}/ckpt/checkpoint.safetensors"
        in (status["error"])
    )
    assert str(svc.state_dir) not in status["error"]
    assert svc.client.get(f"/jobs/{job_id}/report").json()["final"]["failed"] is True


def test_a_damaged_checkpoint_fails_its_job_on_resume(service, tmp_path) -> None:
    state = tmp_path / "state"
    job = write_record(state, "running")
    checkpoint = state / "jobs" / job["id"] / "ckpt" / "checkpoint.safetensors"
    checkpoint.parent.mkdir()
    checkpoint.write_bytes(b"not a checkpoint")
    svc = service(state_dir=state)
    status = svc.wait(job["id"])
    assert status["state"] == "failed"
    assert f"<state dir>/jobs/{job['id']}/ckpt/checkpoint.safetensors" in status["error"]
    assert str(state) not in status["error"]
    assert svc.wait(svc.submit())["state"] == "succeeded"  # and the service goes on
