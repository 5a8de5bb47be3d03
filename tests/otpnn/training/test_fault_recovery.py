"""Faults injected at chosen points: the tree recovers and the result does not change."""

from __future__ import annotations

import pytest

from otpnn.faults import Chaos, parse_fault
from otpnn.training.job import JobOptions, TrainingFailed, TrainingJob

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
    from tests.otpnn.training.conftest import dataset

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
