"""Local SGD on real thread and process workers, through both its protocols (lockstep: the workers
average in shared memory; stepwise: the driver sends shares and averages): the serial reference's
bits for the same worker count, run to run, under every recovered fault, and across a checkpoint
and resume (also under the other protocol)."""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import structlog.testing
from training_support import (
    WORKER_FAULT_CASES,
    config,
    dataset,
    reference_sha,
    run_job,
    run_killing_workers,
)

from otpnn.faults import Chaos, parse_fault
from otpnn.model import params_sha256
from otpnn.training import JobOptions, OptionsError, ResumeError, TrainingJob, resolve
from otpnn.training.drivers import DRIVERS
from otpnn.training.drivers import local_sgd_lockstep_rank as ranks
from otpnn.training.drivers.local_sgd import LocalSGDDriver
from otpnn.training.drivers.local_sgd_lockstep import LocalSGDLockstepDriver
from otpnn.training.memory import JobTooLarge, check_memory, job_memory
from otpnn.training.state import Progress

# 12 steps an epoch; warm-up 3, then rounds of N*4 batches (2 workers: steps 4-11, then 12).
LOCAL = {"algorithm": "local-sgd", "sync_every": 4, "warmup_steps": 3}
PROTOCOLS = ["lockstep", "stepwise"]


def _faults(*specs: str) -> tuple:
    return tuple(parse_fault(s) for s in specs)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    ("workers", "backend"), [(2, "thread"), (3, "thread"), (2, "process"), (3, "process")]
)
def test_actor_runs_give_the_reference_bits_for_their_worker_count(
    workers, backend, protocol
) -> None:
    with structlog.testing.capture_logs() as lines:
        sha, job = run_job(config(workers=workers, backend=backend, **LOCAL), protocol=protocol)
    assert sha == reference_sha(workers=workers, **LOCAL)
    assert sha != reference_sha()  # not sync SGD
    assert job.progress.step == 24
    assert job.state.restarts == 0
    started = [line["protocol"] for line in lines if line["event"] == "coordinator_started"]
    assert started == [f"local-sgd-{protocol}"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("backend", ["thread", "process"])
@pytest.mark.parametrize("workers", [2, 3])
def test_a_killed_and_a_crashed_worker_redo_their_shares_from_the_last_average(
    workers, backend, protocol
) -> None:
    faults = _faults("kill:worker=1@step=9", "crash:worker=0@step=14")
    cfg = config(workers=workers, backend=backend, **LOCAL)
    sha, job = run_job(cfg, faults=faults, protocol=protocol)
    assert sha == reference_sha(workers=workers, **LOCAL)
    assert job.state.restarts_by_actor() == {"worker-1": 1, "worker-0": 1}
    events = job.state.events()
    assert sorted(e.actor for e in events if e.kind == "fault_injected") == ["worker-0", "worker-1"]
    assert sum(e.kind == "recovered" for e in events) == 2


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(("spec", "backend", "restarted"), WORKER_FAULT_CASES)
def test_every_worker_fault_kind_is_survived_with_the_same_bits(
    spec, backend, restarted, protocol
) -> None:
    """A hung worker is killed once it misses its deadline, well before the job's watchdog
    would take the coordinator for hung (nothing else restarts)."""
    cfg = config(workers=2, backend=backend, **LOCAL)
    sha, job = run_job(cfg, faults=_faults(spec), step_timeout=1.0, protocol=protocol)
    assert sha == reference_sha(workers=2, **LOCAL)
    assert sum(e.kind == "fault_injected" for e in job.state.events()) == 1
    assert job.state.restarts_by_actor() == restarted


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_worker_fault_lands_in_the_round_where_that_workers_share_reaches_its_step(
    protocol,
) -> None:
    # Round 4..11: rank 0 takes 4-7, rank 1 takes 8-11; step 6 is rank 0's, so worker 1 meets
    # its step=6 fault at its share's first step, 8.
    _, job = run_job(config(workers=2, backend="thread", **LOCAL), protocol=protocol,
                     faults=_faults("crash:worker=1@step=6"))  # fmt: skip
    fired = [(e.actor, e.step) for e in job.state.events() if e.kind == "fault_injected"]
    assert fired == [("worker-1", 8)]
    assert [e.actor for e in job.state.events() if e.kind == "worker_crash"] == ["worker-1"]


def test_a_rank_dying_half_way_through_an_average_loses_only_that_round(monkeypatch) -> None:
    """What the two rows of the global state are for: a worker that dies while it writes its
    slice of round j's average leaves round j-1's state whole, and round j is trained again
    from it (counted done, the torn row would be trained on, and the bits would differ)."""
    real = ranks.average_into
    calls = 0

    def tears_then_dies(replicas, out):
        nonlocal calls
        real(replicas, out)
        calls += 1
        if calls == 3:  # round 2 (steps 5-8), its parameters
            out[: len(out) // 2] = np.nan
            raise RuntimeError("died writing its slice of the average")
        return out

    monkeypatch.setattr(ranks, "average_into", tears_then_dies)
    cfg = config(workers=1, backend="thread", **{**LOCAL, "warmup_steps": 0})
    sha, job = run_job(cfg, protocol="lockstep")
    assert calls > 3
    assert sha == reference_sha(workers=1, **{**LOCAL, "warmup_steps": 0})
    assert job.state.restarts_by_actor() == {"worker-0": 1}


def test_a_killed_thread_rank_that_trains_on_writes_nothing_shared(monkeypatch) -> None:
    """Python cannot stop a thread: a thread worker killed for missing its deadline finishes the
    share it was training while the next run trains that share again. It must not write into
    the replicas (or the result would depend on when it finished)."""
    real = ranks.local_steps
    stalled = threading.Event()

    def stalls_once(*args, **kwargs):
        if not stalled.is_set():
            stalled.set()
            time.sleep(0.8)  # past the 0.5 s deadline: the worker is killed meanwhile
        return real(*args, **kwargs)

    monkeypatch.setattr(ranks, "local_steps", stalls_once)
    cfg = config(workers=2, backend="thread", **{**LOCAL, "warmup_steps": 0, "epochs": 60})
    sha, job = run_job(cfg, protocol="lockstep", step_timeout=0.5)
    time.sleep(0.9)  # the stalled rank has finished its share by now
    assert stalled.is_set()
    assert sum(job.state.restarts_by_actor().values()) == 1
    assert sha == reference_sha(workers=2, **{**LOCAL, "warmup_steps": 0, "epochs": 60})


def test_lockstep_workers_killed_from_outside_at_arbitrary_moments_change_nothing() -> None:
    """kill -9 lands wherever a rank is: training a share, waiting at a barrier, writing its
    slice of an average. Each time the run is aborted, the rounds every rank averaged are kept
    and the next one trained again from their average: the serial reference's bits."""
    fields = {**LOCAL, "epochs": 12}  # 144 steps
    sha, job = run_killing_workers(config(workers=2, backend="process", **fields))
    assert sha == reference_sha(workers=2, **fields)
    assert job.state.restarts_by_actor() == {"worker-0": 2, "worker-1": 2}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_coordinator_faults_and_checkpoints_wait_for_an_average(protocol) -> None:
    """A coordinator crash planned inside a round fires after its average (step 12 ends the
    round 4..11 and the epoch's last, short round), and the snapshot it resumes from, taken at
    the first boundary past checkpoint_every=5, is whole."""
    cfg = config(workers=2, backend="process", checkpoint_every=5, **LOCAL)
    sha, job = run_job(cfg, faults=_faults("crash:coordinator@step=9"), protocol=protocol)
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
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_every_other_fault_target_is_survived_with_the_same_bits(spec, restarted, protocol) -> None:
    cfg = config(workers=2, backend="thread", **LOCAL)
    sha, job = run_job(cfg, faults=_faults(spec), step_timeout=0.5, protocol=protocol)
    assert sha == reference_sha(workers=2, **LOCAL)
    assert job.state.restarts_by_actor()[restarted] == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("backend", ["thread", "process"])
def test_chaos_is_survived_and_repeatable(backend, protocol) -> None:
    cfg = config(workers=2, backend=backend, **LOCAL)
    sha, job = run_job(cfg, chaos=Chaos(0.02, seed=3), max_restarts=50, protocol=protocol)
    assert sha == reference_sha(workers=2, **LOCAL)
    assert job.state.restarts > 0


def _stopped_at(ckpt: Path, step: int, protocol: str = "auto", **fields: object) -> None:
    reached = threading.Event()

    def on_progress(p: Progress) -> None:
        if p.step >= step:
            reached.set()

    cfg = config(workers=2, backend="thread", epochs=3, **LOCAL, **fields)
    options = JobOptions(checkpoint_dir=str(ckpt), protocol=protocol)
    job = TrainingJob(cfg, dataset(), options, on_progress=on_progress)
    job.start()
    try:
        assert reached.wait(60)
    finally:
        job.stop()


@pytest.mark.parametrize(("stopped", "resumed"), [PROTOCOLS, PROTOCOLS[::-1]])
@pytest.mark.parametrize("step", [2, 5, 13])
def test_a_stop_resumes_at_an_average_to_the_uninterrupted_bits(
    tmp_path, step, stopped, resumed
) -> None:
    _stopped_at(tmp_path, step, stopped)
    cfg = config(workers=2, backend="process", epochs=3, **LOCAL)
    options = JobOptions(checkpoint_dir=str(tmp_path), resume=True, protocol=resumed)
    job = TrainingJob(cfg, dataset(), options)
    assert params_sha256(job.run()["params"]) == reference_sha(workers=2, epochs=3, **LOCAL)


def test_resuming_with_another_worker_count_is_refused(tmp_path) -> None:
    _stopped_at(tmp_path, 5)
    cfg = config(workers=3, backend="thread", epochs=3, **LOCAL)
    with pytest.raises(ResumeError, match="workers: checkpoint 2 vs now 3"):
        TrainingJob(cfg, dataset(), JobOptions(checkpoint_dir=str(tmp_path), resume=True))


def test_options_choose_lockstep_where_it_runs_and_stepwise_on_request(monkeypatch) -> None:
    cfg = config(workers=2, backend="thread", **LOCAL)
    assert resolve(cfg, JobOptions()).protocol == "local-sgd-lockstep"
    assert resolve(cfg, JobOptions(protocol="stepwise")).protocol == "local-sgd-stepwise"
    monkeypatch.setitem(DRIVERS, "relay", LocalSGDDriver)  # a protocol of sync SGD's only
    with pytest.raises(OptionsError, match="--protocol relay is not one of --algorithm local-sgd"):
        resolve(cfg, JobOptions(protocol="relay"))
    assert LocalSGDDriver.unsupported("ray") is None
    assert "shared memory" in (LocalSGDLockstepDriver.unsupported("ray") or "")


def test_the_memory_bound_counts_a_replica_per_worker() -> None:
    sync = job_memory(config(workers=16, backend="thread"))
    local = job_memory(config(workers=16, backend="thread", **LOCAL))
    per_worker = 4 * (2 + 4 + 2 + 2) * 109_386  # float32, 4 shards: replica, buffers, rows
    assert local.total - sync.total == 16 * per_worker + 4 * 2 * 2 * 109_386  # the average x 2
    with pytest.raises(JobTooLarge, match="local SGD: workers' replicas"):
        check_memory(config(workers=64, backend="thread", **LOCAL), limit=local.total * 3)
