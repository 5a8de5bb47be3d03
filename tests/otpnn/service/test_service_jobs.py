"""Jobs through the HTTP API of a live server: submit, poll, report, model, cancel, queue,
faults, failures, the live tree and the metrics."""

from __future__ import annotations

import json
import os

from otpnn.checkpoint import load_weights
from otpnn.config import TrainConfig
from otpnn.model import params_sha256
from otpnn.service import records

# A job that is certainly still running a second after it starts (a worker sleeps at step 3).
SLOW = {"faults": ["slow=1.5:worker=any@step=3"]}


def test_submit_poll_then_fetch_report_and_model(service, fault_free_sha, tmp_path) -> None:
    svc = service()
    job_id = svc.submit()
    status = svc.wait(job_id)
    assert status["state"] == "succeeded", status
    assert (status["epoch"], status["step"], status["total_steps"]) == (2, 24, 24)
    assert status["metrics"]["epoch"] == 2
    assert 0 <= status["metrics"]["test_accuracy"] <= 1
    assert status["restarts"] == 0
    assert status["final"]["params_sha256"] == fault_free_sha

    report = svc.client.get(f"/jobs/{job_id}/report")
    assert report.status_code == 200
    data = report.json()
    assert set(data) >= {"schema", "config", "environment", "epochs", "restarts", "events", "final"}
    assert data["final"]["params_sha256"] == fault_free_sha
    assert [row["epoch"] for row in data["epochs"]] == [1, 2]

    model = svc.client.get(f"/jobs/{job_id}/model")
    assert model.status_code == 200
    path = tmp_path / "model.safetensors"
    path.write_bytes(model.content)
    params, sizes, meta = load_weights(path)
    assert params_sha256(params) == fault_free_sha
    assert sizes == (784, 128, 64, 10)
    assert meta["job"] == job_id

    listed = svc.client.get("/jobs").json()
    assert [j["id"] for j in listed] == [job_id]
    files = {p.relative_to(svc.state_dir).as_posix() for p in svc.state_dir.rglob("*.*")}
    assert files == {
        ".otpnn.lock",  # the service's hold on its state dir
        f"jobs/{job_id}/job.json",
        f"jobs/{job_id}/report.json",
        f"jobs/{job_id}/model.safetensors",
        f"jobs/{job_id}/ckpt/checkpoint.safetensors",
        f"jobs/{job_id}/ckpt/.otpnn.lock",  # the job's hold on its checkpoint directory
    }
    record = json.loads((svc.state_dir / "jobs" / job_id / "job.json").read_text())
    assert record["state"] == "succeeded"


def test_two_run_at_once_and_the_third_queues(service, fault_free_sha) -> None:
    svc = service(max_jobs=2)
    ids = [svc.submit(**SLOW) for _ in range(3)]
    assert [svc.job(i)["state"] for i in ids] == ["running", "running", "queued"]
    assert svc.client.get("/healthz").json()["jobs"]["queued"] == 1
    done = [svc.wait(i) for i in ids]
    assert [d["state"] for d in done] == ["succeeded"] * 3
    assert {d["final"]["params_sha256"] for d in done} == {fault_free_sha}
    # The queued job started only when one of the first two had finished.
    assert done[2]["started"] >= min(done[0]["finished"], done[1]["finished"])
    assert done[0]["started"] < done[1]["finished"]
    assert done[1]["started"] < done[0]["finished"]


def test_cancel_a_running_and_a_queued_job(service) -> None:
    svc = service(max_jobs=1)
    running, queued = svc.submit(**SLOW), svc.submit()
    svc.wait(running, lambda j: j["step"] >= 1)
    assert svc.client.post(f"/jobs/{queued}/cancel").json()["state"] == "cancelled"
    assert svc.client.post(f"/jobs/{running}/cancel").status_code == 200
    status = svc.wait(running)
    assert status["state"] == "cancelled"
    assert status["step"] < 24
    again = svc.client.post(f"/jobs/{running}/cancel")
    assert again.status_code == 409
    assert "already cancelled" in again.json()["error"]
    assert svc.client.get(f"/jobs/{running}/model").status_code == 409
    assert svc.job(queued)["state"] == "cancelled"


def test_a_worker_kill_injected_through_the_api_is_recovered(service, fault_free_sha) -> None:
    svc = service()
    job_id = svc.submit(**SLOW)
    svc.wait(job_id, lambda j: j["step"] >= 1)
    r = svc.client.post(f"/jobs/{job_id}/faults", json={"spec": "kill:worker=0@step=8"})
    assert r.status_code == 200, r.text
    status = svc.wait(job_id)
    assert status["state"] == "succeeded"
    assert status["final"]["params_sha256"] == fault_free_sha
    assert status["restarts_by_actor"] == {"worker-0": 1}
    events = svc.client.get(f"/jobs/{job_id}/report").json()["events"]
    assert any(e["kind"] == "fault_injected" and e["step"] == 8 for e in events)
    metrics = svc.client.get("/metrics").text
    assert 'otpnn_restarts_total{actor_kind="worker"} 1.0' in metrics
    assert "otpnn_faults_injected_total 2.0" in metrics  # the slow one and the kill
    assert 'otpnn_jobs{state="succeeded"} 1.0' in metrics


def test_a_failing_job_leaves_the_others_and_the_service_alone(service, fault_free_sha) -> None:
    svc = service(max_jobs=2)
    doomed = svc.submit(chaos=1.0, max_restarts=1, step_timeout=5)
    healthy = svc.submit()
    failed = svc.wait(doomed)
    assert failed["state"] == "failed"
    assert "training failed: the supervision tree gave up" in failed["error"]
    assert svc.client.get(f"/jobs/{doomed}/report").json()["final"]["failed"] is True
    assert svc.wait(healthy)["final"]["params_sha256"] == fault_free_sha
    assert svc.client.get("/healthz").json()["status"] == "ok"
    assert svc.wait(svc.submit())["state"] == "succeeded"  # the service still takes jobs
    assert svc.client.get("/tree").json()["children"][0]["children"] == []


def test_missing_mnist_is_refused_at_once_naming_no_server_path(
    service, tmp_path, monkeypatch
) -> None:
    monkeypatch.setenv("OTPNN_DATA_DIR", str(tmp_path / "nothing-here"))
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))
    svc = service()
    r = svc.client.post("/jobs", json={"dataset": "mnist"})  # no data_dir, none of its own
    assert r.status_code == 422, r.text
    assert "no data_dir given, and the service has no MNIST of its own" in r.json()["error"]
    assert str(tmp_path) not in r.json()["error"]
    r = svc.client.post("/jobs", json={"dataset": "mnist", "data_dir": str(tmp_path)})
    assert r.status_code == 422, r.text
    assert "not an MNIST directory" in r.json()["error"]
    assert svc.client.get("/jobs").json() == []


def test_tree_shows_the_running_job_down_to_its_worker_processes(service) -> None:
    svc = service()
    job_id = svc.submit(**SLOW)
    status = svc.wait(job_id, lambda j: j["step"] >= 1)
    tree = svc.client.get("/tree").json()
    assert tree["id"] == "otpnn-service"
    (jobs,) = tree["children"]
    assert jobs["id"] == "jobs"
    (job,) = jobs["children"]
    assert job["id"] == f"job-{job_id}"
    assert [c["id"] for c in job["children"]] == ["loader", "pool", "coordinator"]
    pool = job["children"][1]
    assert {w["id"]: w["pid"] for w in pool["children"]} == {
        "worker-0": status["pids"]["worker-0"],
        "worker-1": status["pids"]["worker-1"],
    }
    assert all(w["kind"] == "process" and w["restarts"] == 0 for w in pool["children"])
    metrics = svc.client.get("/metrics").text
    assert f'otpnn_job_step{{job_id="{job_id}"}}' in metrics
    svc.client.post(f"/jobs/{job_id}/cancel")
    svc.wait(job_id)


def test_unfinished_jobs_resume_when_the_service_starts_again(service, fault_free_sha, tmp_path):
    state = tmp_path / "resumed"
    first = service(state_dir=state)
    job_id = first.submit(**SLOW, checkpoint_every=2)
    queued = first.submit()
    first.wait(job_id, lambda j: j["step"] >= 2)
    first.manager.shutdown(15)  # what SIGTERM does: checkpoint, leave it unfinished on disk
    record = json.loads((state / "jobs" / job_id / "job.json").read_text())
    assert record["state"] == "running"
    assert (state / "jobs" / job_id / "ckpt" / "checkpoint.safetensors").is_file()
    second = service(state_dir=state)
    for i in (job_id, queued):
        status = second.wait(i)
        assert status["state"] == "succeeded"
        assert status["final"]["params_sha256"] == fault_free_sha
    assert second.job(job_id)["resumes"] == 1
    assert second.job(queued)["resumes"] == 0


def test_a_job_record_keeps_its_shard_size_for_a_restart_on_another_machine(monkeypatch) -> None:
    """The default shard size depends on the cores: a record holds the effective one, so the
    job resumes on a machine with other cores (a resume checks the shard size)."""
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(4)))
    record = records.new("j", TrainConfig(batch_size=256), {})
    assert record["config"]["shard_size"] == 64
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(2)))
    assert TrainConfig.from_dict(record["config"]).effective_shard_size == 64
    assert TrainConfig(batch_size=256).effective_shard_size == 128
