"""Faults injected at chosen points: the tree recovers and the result does not change."""

from __future__ import annotations

import threading
import time

import pytest
import structlog.testing

from otpnn.faults import Chaos, parse_fault
from otpnn.model import params_sha256
from otpnn.training import JobOptions, TrainingFailed, TrainingJob

WORKER_FAULTS = ["crash", "kill", "exit", "hang"]


@pytest.mark.parametrize("backend", ["thread", "process"])
@pytest.mark.parametrize("kind", WORKER_FAULTS)
def test_worker_fault_is_recovered_with_the_same_result(
    kind, backend, config, run_job, fault_free_sha
) -> None:
    fault = parse_fault(f"{kind}:worker=1@step=5")
    sha, job = run_job(config(workers=2, backend=backend), faults=(fault,), step_timeout=1.0)
    assert sha == fault_free_sha
    events = job.state.events()
    assert [e.actor for e in events if e.kind == "fault_injected"] == ["worker-1"]
    assert job.state.restarts_by_actor() == {"worker-1": 1}
    lost = [e for e in events if e.kind.startswith("worker_")]
    assert [(e.actor, e.step) for e in lost] == [("worker-1", 5)]
    assert any(e.kind == "recovered" and e.recovery_seconds is not None for e in events)


@pytest.mark.parametrize("spec", ["slow=0.2:worker=any@step=3", "crash:worker=0@shard=9"])
def test_slow_and_shard_faults(spec, config, run_job, fault_free_sha) -> None:
    sha, job = run_job(config(workers=2, backend="thread"), faults=(parse_fault(spec),))
    assert sha == fault_free_sha
    assert sum(e.kind == "fault_injected" for e in job.state.events()) == 1
    assert job.state.restarts == (0 if spec.startswith("slow") else 1)


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_coordinator_crash_resumes_from_its_snapshot(backend, config, run_job, fault_free_sha):
    faults = (parse_fault("crash:coordinator@step=17"),)
    sha, job = run_job(config(workers=2, backend=backend, checkpoint_every=5), faults=faults)
    assert sha == fault_free_sha
    assert job.state.restarts_by_actor() == {"coordinator": 1}


def test_coordinator_crash_without_step_snapshots_redoes_the_epoch(config, run_job, fault_free_sha):
    sha, job = run_job(
        config(workers=2, backend="thread"), faults=(parse_fault("crash:coordinator@step=5"),)
    )
    assert sha == fault_free_sha
    assert job.state.restarts_by_actor() == {"coordinator": 1}


@pytest.mark.parametrize("spec", ["crash:loader@epoch=2", "crash:loader@step=3"])
def test_loader_crash_restarts_everything_after_it(spec, config, run_job, fault_free_sha) -> None:
    sha, job = run_job(config(workers=2, backend="process"), faults=(parse_fault(spec),))
    assert sha == fault_free_sha
    # rest_for_one: the loader, the pool (and so its workers' new incarnations) and the coordinator.
    restarted = job.state.restarts_by_actor()
    assert restarted["loader"] == 1
    assert restarted["pool"] == 1
    assert restarted["coordinator"] == 1
    assert restarted["worker-0"] == 1
    assert restarted["worker-1"] == 1


def test_low_chaos_is_survived_and_repeatable(config, run_job, fault_free_sha) -> None:
    chaos = Chaos(0.05, seed=1)
    sha, job = run_job(config(workers=2, backend="thread"), chaos=chaos, max_restarts=100)
    assert sha == fault_free_sha
    faults = [e.step for e in job.state.events() if e.kind == "fault_injected"]
    assert faults  # 96 shards at 5%: the seed was chosen so that some fail
    _, again = run_job(config(workers=2, backend="thread"), chaos=chaos, max_restarts=100)
    assert [e.step for e in again.state.events() if e.kind == "fault_injected"] == faults


def test_restart_intensity_exceeded_gives_up_cleanly(config, tmp_path) -> None:
    from training_support import dataset

    job = TrainingJob(
        config(workers=2, backend="process"),
        dataset(),
        JobOptions(chaos=Chaos(1.0), checkpoint_dir=str(tmp_path)),
    )
    job.start()
    try:
        with pytest.raises(TrainingFailed) as failed:
            job.wait(timeout=60)
    finally:
        job.stop()
    message = str(failed.value)
    assert "gave up" in message
    assert "worker-" in message
    assert "InjectedCrash" in message
    assert job.root is not None
    assert not job.root.is_alive()


@pytest.mark.parametrize("kind", ["kill", "exit", "hang"])
def test_coordinator_kill_exit_hang_are_recovered(kind, config, run_job, fault_free_sha) -> None:
    faults = (parse_fault(f"{kind}:coordinator@step=7"),)
    sha, job = run_job(config(workers=2, backend="thread"), faults=faults, step_timeout=0.5)
    assert sha == fault_free_sha
    assert job.state.restarts_by_actor() == {"coordinator": 1}
    if kind == "hang":
        assert any(e.kind == "coordinator_hang" for e in job.state.events())


@pytest.mark.parametrize("kind", ["crash", "kill"])
def test_pool_fault_restarts_the_pool_and_the_coordinator(kind, config, run_job, fault_free_sha):
    sha, job = run_job(
        config(workers=2, backend="process"), faults=(parse_fault(f"{kind}:pool@step=4"),)
    )
    assert sha == fault_free_sha
    restarted = job.state.restarts_by_actor()
    assert restarted["pool"] == 1
    assert restarted["coordinator"] == 1
    assert "loader" not in restarted  # rest_for_one: only what comes after the pool


def test_hung_loader_is_killed_and_everything_after_it_restarts(config, run_job, fault_free_sha):
    sha, job = run_job(
        config(workers=2, backend="thread"), faults=(parse_fault("hang:loader@epoch=2"),),
        step_timeout=0.5,
    )  # fmt: skip
    assert sha == fault_free_sha
    assert job.state.restarts_by_actor()["loader"] == 1


def test_fault_injected_into_a_running_job_from_another_thread(
    config, training_dataset, fault_free_sha
):

    job = TrainingJob(config(workers=2, backend="process"), training_dataset, JobOptions())
    job.start()
    try:
        injector = threading.Thread(target=job.inject, args=(parse_fault("kill:worker=0@step=20"),))
        injector.start()
        injector.join()
        result = job.wait(timeout=60)
    finally:
        job.stop()
    assert params_sha256(result["params"]) == fault_free_sha
    assert job.state.restarts_by_actor() == {"worker-0": 1}


def test_worker_killed_from_outside_is_recovered(config, training_dataset, fault_free_sha) -> None:
    """A plain kill -9 of a worker pid behaves like an injected kill."""
    import os
    import signal

    # A slow step keeps the job busy while the test kills worker-1 from outside.
    job = TrainingJob(
        config(workers=2, backend="process"),
        training_dataset,
        JobOptions(faults=(parse_fault("slow=1.0:worker=0@step=3"),)),
    )
    job.start()
    try:
        while job.progress.step < 2:
            job.state.done.wait(0.01)
        os.kill(job.state.pids["worker-1"], signal.SIGKILL)
        result = job.wait(timeout=60)
    finally:
        job.stop()
    assert params_sha256(result["params"]) == fault_free_sha
    assert job.state.restarts_by_actor() == {"worker-1": 1}


def test_every_job_and_coordinator_log_line_names_the_job(config, training_dataset) -> None:
    """A service runs several jobs at once: each line must say which one it is about."""
    job = TrainingJob(
        config(workers=2, backend="thread"),
        training_dataset,
        JobOptions(faults=(parse_fault("crash:worker=1@step=3"),)),
        name="alpha",
    )
    with structlog.testing.capture_logs() as lines:
        job.run()
    ours = {"job_started", "coordinator_started", "fault_injected", "worker_lost", "epoch_done"}
    seen = [line for line in lines if line["event"] in ours]
    assert {line["event"] for line in seen} == ours
    assert {line.get("job") for line in seen} == {"alpha"}


def _await_a_fault(job: TrainingJob) -> None:
    """Until the job's first planned fault has fired (the job keeps running)."""
    deadline = time.monotonic() + 30
    while not any(e.kind == "fault_injected" for e in job.state.events()):
        assert time.monotonic() < deadline, "the fault never fired"
        time.sleep(0.01)


def test_stopping_a_job_waits_one_second_not_five_for_a_busy_worker(config, training_dataset):
    """A worker stuck in a slow shard is killed after WORKER_SHUTDOWN (1 s), not OTP's 5 s."""
    job = TrainingJob(
        config(workers=2, backend="process"),
        training_dataset,
        JobOptions(faults=(parse_fault("slow=30:worker=0@step=3"),)),
    )
    job.start()
    try:
        _await_a_fault(job)
    finally:
        with structlog.testing.capture_logs() as lines:
            job.stop()
    timeouts = [line for line in lines if line["event"] == "child_shutdown_timeout"]
    assert [(t["child_id"], t["shutdown"]) for t in timeouts] == [("worker-0", 1.0)]


def test_fault_planned_while_a_run_goes_on_fires_at_its_step(
    config, training_dataset, fault_free_sha
):
    """A lockstep run covers many steps; a fault planned meanwhile must not wait for the next
    run: the coordinator aborts the run, keeps its finished steps and replans."""

    job = TrainingJob(
        config(workers=2, backend="process"),
        training_dataset,
        JobOptions(faults=(parse_fault("slow=0.5:worker=0@step=2"),)),
    )
    job.start()
    try:
        _await_a_fault(job)
        job.inject(parse_fault("crash:worker=1@step=4"))
        job.inject(parse_fault("crash:coordinator@step=8"))
        result = job.wait(timeout=60)
    finally:
        job.stop()
    assert params_sha256(result["params"]) == fault_free_sha
    events = job.state.events()
    lost = [(e.actor, e.step) for e in events if e.kind.startswith("worker_")]
    assert lost == [("worker-1", 4)]  # not 13, the first step of the next run (epoch 2)
    injected = [(e.actor, e.step) for e in events if e.kind == "fault_injected"]
    assert injected == [("worker-0", 2), ("worker-1", 4), ("coordinator", 8)]
    assert job.state.restarts_by_actor() == {"worker-1": 1, "coordinator": 1}


def test_workers_killed_at_arbitrary_moments_change_nothing(config, reference_sha) -> None:
    """kill -9 lands wherever a worker is: computing, reducing, writing its slice of the update,
    waiting at a barrier. Each time the run is aborted, the steps every worker finished are kept
    and the rest redone: the result stays the serial reference's."""
    from training_support import run_killing_workers

    sha, job = run_killing_workers(config(workers=2, backend="process", epochs=12))  # 144 steps
    assert sha == reference_sha(epochs=12)
    assert job.state.restarts_by_actor() == {"worker-0": 2, "worker-1": 2}
    # A kill between two runs (an epoch's end) loses no work; one inside a run does.
    lost = [e for e in job.state.events() if e.kind.startswith("worker_")]
    assert 1 <= len(lost) <= 4


def test_recovery_is_reported_when_the_lost_step_is_redone_not_when_the_run_ends(
    config, run_job, fault_free_sha
) -> None:
    faults = (parse_fault("crash:worker=1@step=3"), parse_fault("slow=0.3:worker=0@step=8"))
    sha, job = run_job(config(workers=2, backend="process"), faults=faults)
    assert sha == fault_free_sha
    timeline = [(e.kind, e.step) for e in job.state.events() if e.kind != "started"]
    # The redo of step 3 is reported before the run it belongs to reaches step 8.
    assert timeline.index(("recovered", 3)) < timeline.index(("fault_injected", 8))
