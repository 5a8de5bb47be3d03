"""Local SGD on real thread and process workers: the serial reference's bits for the same worker
count, run to run, under every recovered fault, and across a checkpoint and resume."""

from __future__ import annotations

import threading
from pathlib import Path

import pytest
import structlog.testing
from training_support import WORKER_FAULT_CASES, config, dataset, reference_sha, run_job

from otpnn.faults import Chaos, parse_fault
from otpnn.model import params_sha256
from otpnn.training import JobOptions, OptionsError, ResumeError, TrainingJob, resolve
from otpnn.training.drivers.local_sgd import LocalSGDDriver
from otpnn.training.memory import JobTooLarge, check_memory, job_memory
from otpnn.training.state import Progress

# 12 steps an epoch; warm-up 3, then rounds of N*4 batches (2 workers: steps 4-11, then 12).
LOCAL = {"algorithm": "local-sgd", "sync_every": 4, "warmup_steps": 3}


def _faults(*specs: str) -> tuple:
    return tuple(parse_fault(s) for s in specs)


@pytest.mark.parametrize(
    ("workers", "backend"), [(2, "thread"), (3, "thread"), (2, "process"), (3, "process")]
)
def test_actor_runs_give_the_reference_bits_for_their_worker_count(workers, backend) -> None:
    with structlog.testing.capture_logs() as lines:
        sha, job = run_job(config(workers=workers, backend=backend, **LOCAL))
    assert sha == reference_sha(workers=workers, **LOCAL)
    assert sha != reference_sha()  # not sync SGD
    assert job.progress.step == 24
    assert job.state.restarts == 0
    started = [line["protocol"] for line in lines if line["event"] == "coordinator_started"]
    assert started == ["local-sgd"]


@pytest.mark.parametrize("backend", ["thread", "process"])
@pytest.mark.parametrize("workers", [2, 3])
def test_a_killed_and_a_crashed_worker_redo_their_shares_from_the_last_average(
    workers, backend
) -> None:
    faults = _faults("kill:worker=1@step=9", "crash:worker=0@step=14")
    sha, job = run_job(config(workers=workers, backend=backend, **LOCAL), faults=faults)
    assert sha == reference_sha(workers=workers, **LOCAL)
    assert job.state.restarts_by_actor() == {"worker-1": 1, "worker-0": 1}
    events = job.state.events()
    assert sorted(e.actor for e in events if e.kind == "fault_injected") == ["worker-0", "worker-1"]
    assert sum(e.kind == "recovered" for e in events) == 2


@pytest.mark.parametrize(("spec", "backend", "restarted"), WORKER_FAULT_CASES)
def test_every_worker_fault_kind_is_survived_with_the_same_bits(spec, backend, restarted) -> None:
    """A hung worker is killed when its share's deadline passes, well before the job's
    watchdog would take the coordinator for hung (nothing else restarts)."""
    sha, job = run_job(
        config(workers=2, backend=backend, **LOCAL), faults=_faults(spec), step_timeout=1.0
    )
    assert sha == reference_sha(workers=2, **LOCAL)
    assert sum(e.kind == "fault_injected" for e in job.state.events()) == 1
    assert job.state.restarts_by_actor() == restarted


def test_a_worker_fault_lands_in_the_round_where_that_workers_share_reaches_its_step() -> None:
    # Round 4..11: rank 0 takes 4-7, rank 1 takes 8-11; step 6 is rank 0's, so worker 1 meets
    # its step=6 fault at its share's first step, 8.
    _, job = run_job(config(workers=2, backend="thread", **LOCAL),
                     faults=_faults("crash:worker=1@step=6"))  # fmt: skip
    lost = [(e.actor, e.step) for e in job.state.events() if e.kind == "worker_crash"]
    assert lost == [("worker-1", 8)]


def test_coordinator_faults_and_checkpoints_wait_for_an_average() -> None:
    """A coordinator crash planned inside a round fires after its average (step 12 ends the
    round 4..11 and the epoch's last, short round), and the snapshot it resumes from, taken at
    the first boundary past checkpoint_every=5, is whole."""
    cfg = config(workers=2, backend="process", checkpoint_every=5, **LOCAL)
    sha, job = run_job(cfg, faults=_faults("crash:coordinator@step=9"))
    assert sha == reference_sha(workers=2, **LOCAL)
    assert job.state.restarts_by_actor() == {"coordinator": 1}
    fired = [e.step for e in job.state.events() if e.kind == "fault_injected"]
    assert fired == [12]


@pytest.mark.parametrize(
    ("spec", "restarted"),
    [
        ("kill:coordinator@step=6", "coordinator"),
        ("hang:coordinator@step=14", "coordinator"),
        ("exit:coordinator@step=2", "coordinator"),
        ("kill:pool@step=9", "pool"),
        ("crash:loader@step=20", "loader"),
        ("hang:loader@epoch=2", "loader"),
    ],
)
def test_every_other_fault_target_is_survived_with_the_same_bits(spec, restarted) -> None:
    sha, job = run_job(
        config(workers=2, backend="thread", **LOCAL), faults=_faults(spec), step_timeout=0.5
    )
    assert sha == reference_sha(workers=2, **LOCAL)
    assert job.state.restarts_by_actor()[restarted] == 1


@pytest.mark.parametrize("backend", ["thread", "process"])
def test_chaos_is_survived_and_repeatable(backend) -> None:
    cfg = config(workers=2, backend=backend, **LOCAL)
    sha, job = run_job(cfg, chaos=Chaos(0.02, seed=3), max_restarts=50)
    assert sha == reference_sha(workers=2, **LOCAL)
    assert job.state.restarts > 0


def _stopped_at(ckpt: Path, step: int, **fields: object) -> None:
    reached = threading.Event()

    def on_progress(p: Progress) -> None:
        if p.step >= step:
            reached.set()

    cfg = config(workers=2, backend="thread", epochs=3, **LOCAL, **fields)
    job = TrainingJob(cfg, dataset(), JobOptions(checkpoint_dir=str(ckpt)), on_progress=on_progress)
    job.start()
    try:
        assert reached.wait(60)
    finally:
        job.stop()


@pytest.mark.parametrize("step", [2, 5, 13])
def test_a_stop_resumes_at_an_average_to_the_uninterrupted_bits(tmp_path, step) -> None:
    _stopped_at(tmp_path, step)
    cfg = config(workers=2, backend="process", epochs=3, **LOCAL)
    job = TrainingJob(cfg, dataset(), JobOptions(checkpoint_dir=str(tmp_path), resume=True))
    assert params_sha256(job.run()["params"]) == reference_sha(workers=2, epochs=3, **LOCAL)


def test_resuming_with_another_worker_count_is_refused(tmp_path) -> None:
    _stopped_at(tmp_path, 5)
    cfg = config(workers=3, backend="thread", epochs=3, **LOCAL)
    with pytest.raises(ResumeError, match="workers: checkpoint 2 vs now 3"):
        TrainingJob(cfg, dataset(), JobOptions(checkpoint_dir=str(tmp_path), resume=True))


def test_options_refuse_a_sync_protocol() -> None:
    cfg = config(workers=2, backend="thread", **LOCAL)
    with pytest.raises(OptionsError, match="--protocol stepwise applies to --algorithm sync"):
        resolve(cfg, JobOptions(protocol="stepwise"))
    assert resolve(cfg, JobOptions()).protocol == "local-sgd"
    assert LocalSGDDriver.unsupported("ray") is None


def test_the_memory_bound_counts_a_replica_per_worker() -> None:
    sync = job_memory(config(workers=16, backend="thread"))
    local = job_memory(config(workers=16, backend="thread", **LOCAL))
    per_worker = 4 * (2 + 4 + 2 + 2) * 109_386  # float32, 4 shards: replica, buffers, rows
    assert local.total - sync.total == 16 * per_worker + 4 * 2 * 109_386
    with pytest.raises(JobTooLarge, match="local SGD: workers' replicas"):
        check_memory(config(workers=64, backend="thread", **LOCAL), limit=local.total * 3)
