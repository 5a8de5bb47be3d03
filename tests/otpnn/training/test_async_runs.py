"""Async SGD on real thread and process workers, through both its protocols (lockstep: the workers
apply the updates; stepwise: the coordinator does): the serial reference's bits for any worker
count and kind, under every recovered fault, and across a checkpoint and resume (with other
workers, and the other protocol)."""

from __future__ import annotations

import threading
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

from otpnn.checkpoint import load_checkpoint, read_checkpoint, save_checkpoint
from otpnn.faults import Chaos, parse_fault
from otpnn.model import SGD, init_params, params_sha256
from otpnn.training import JobOptions, ResumeError, TrainingJob, resolve
from otpnn.training.drivers import async_lockstep_rank as ranks
from otpnn.training.drivers.async_lockstep import AsyncLockstepDriver
from otpnn.training.drivers.async_stepwise import AsyncStepwiseDriver
from otpnn.training.memory import job_memory
from otpnn.training.resume_point import EARLIER_PARAMS, read_resume_point, write_snapshot
from otpnn.training.state import Progress, Snapshot

# 12 steps an epoch, 4 micro-shards a step. S=3: three updates in flight (one message each for
# up to 3 workers); S=2 with 3 workers: each update in two messages.
# Momentum and no warm-up (not async's defaults): the momentum buffer is part of what
# the runs must carry over faults and resumes.
ASYNC = {"algorithm": "async", "staleness": 3, "lr": 0.1, "momentum": 0.5, "lr_warmup_steps": 0}
PROTOCOLS = ["lockstep", "stepwise"]


def _faults(*specs: str) -> tuple:
    return tuple(parse_fault(s) for s in specs)


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(
    ("workers", "backend", "staleness"),
    [(1, "thread", 3), (2, "thread", 3), (3, "thread", 2), (2, "process", 3), (3, "process", 2),
     (4, "process", 2)],
)  # fmt: skip
def test_actor_runs_give_the_reference_bits_for_any_workers(
    workers, backend, staleness, protocol
) -> None:
    fields = {**ASYNC, "staleness": staleness}
    with structlog.testing.capture_logs() as lines:
        sha, job = run_job(config(workers=workers, backend=backend, **fields), protocol=protocol)
    assert sha == reference_sha(**fields)
    assert sha != reference_sha(lr=0.1)  # not sync SGD
    assert job.progress.step == 24
    assert job.state.restarts == 0
    started = [line["protocol"] for line in lines if line["event"] == "coordinator_started"]
    assert started == [f"async-{protocol}"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_staleness_1_on_actors_is_sync_sgd(protocol) -> None:
    fields = {**ASYNC, "staleness": 1}
    sha, _ = run_job(config(workers=2, backend="thread", **fields), protocol=protocol)
    assert sha == reference_sha(lr=0.1)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_a_learning_rate_schedule_and_a_validation_split_keep_the_reference_bits(protocol) -> None:
    fields = {**ASYNC, "lr_schedule": "cosine", "lr_warmup_steps": 5, "val_split": 0.1}
    sha, job = run_job(config(workers=2, backend="process", **fields), protocol=protocol)
    assert sha == reference_sha(**fields)
    assert sha != reference_sha(**ASYNC)
    assert "val_accuracy" in job.state.latest_snapshot().history[-1]


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("backend", ["thread", "process"])
def test_a_killed_and_a_crashed_worker_have_their_work_redone(backend, protocol) -> None:
    faults = _faults("kill:worker=1@step=9", "crash:worker=0@step=14")
    cfg = config(workers=2, backend=backend, **ASYNC)
    sha, job = run_job(cfg, faults=faults, protocol=protocol)
    assert sha == reference_sha(**ASYNC)
    assert job.state.restarts_by_actor() == {"worker-1": 1, "worker-0": 1}
    events = job.state.events()
    assert sorted(e.actor for e in events if e.kind == "fault_injected") == ["worker-0", "worker-1"]
    assert sum(e.kind == "recovered" for e in events) == 2


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(("spec", "backend", "restarted"), WORKER_FAULT_CASES)
def test_every_worker_fault_kind_is_survived_with_the_same_bits(
    spec, backend, restarted, protocol
) -> None:
    """A hung worker is killed once it misses the step deadline, well before the job's
    watchdog would take the coordinator for hung (nothing else restarts)."""
    cfg = config(workers=2, backend=backend, **ASYNC)
    sha, job = run_job(cfg, faults=_faults(spec), step_timeout=1.0, protocol=protocol)
    assert sha == reference_sha(**ASYNC)
    assert sum(e.kind == "fault_injected" for e in job.state.events()) == 1
    assert job.state.restarts_by_actor() == restarted


@pytest.mark.parametrize("workers", [2, 3])
def test_a_worker_fault_fires_at_its_update_on_the_worker_it_names(workers) -> None:
    """Stepwise: each update is one message here, the one of update 7 goes to worker 1, of 8
    to worker 0."""
    _, job = run_job(config(workers=workers, backend="thread", **ASYNC), protocol="stepwise",
                     faults=_faults("crash:worker=1@step=7", "crash:worker=0@step=8"))  # fmt: skip
    lost = [(e.actor, e.step) for e in job.state.events() if e.kind == "worker_crash"]
    assert lost == [("worker-1", 7), ("worker-0", 8)]


@pytest.mark.parametrize("workers", [2, 3])
def test_a_lockstep_worker_fault_fires_at_its_update_on_the_worker_it_names(workers) -> None:
    """Lockstep: the ranks take turns at the updates, but the worker a fault names takes the
    turn of the update where it is due (worker 1 would own 8 by turns, worker 0 would own 7)."""
    faults = _faults("crash:worker=1@step=7", "crash:worker=0@step=8", "slow=0.01:worker=0@step=3")
    sha, job = run_job(config(workers=workers, backend="thread", **ASYNC), protocol="lockstep",
                       faults=faults)  # fmt: skip
    injected = [(e.step, e.actor) for e in job.state.events() if e.kind == "fault_injected"]
    assert sorted(injected) == [(3, "worker-0"), (7, "worker-1"), (8, "worker-0")]
    assert sha == reference_sha(**ASYNC)


def test_a_rank_dying_half_way_through_an_update_loses_only_that_update(monkeypatch) -> None:
    """What the ring's spare row and the two momentum rows are for: a worker that dies while it
    writes update t leaves the state after t-1 whole, and update t is redone from it."""
    real = ranks.apply_update
    calls = 0

    def tears_then_dies(hyper, ring, velocity, grads, step, rows, *, velocity_out):
        nonlocal calls
        real(hyper, ring, velocity, grads, step, rows, velocity_out=velocity_out)
        calls += 1
        if calls == 7:
            ring.version(step)[::2] = np.nan
            velocity_out[:] = np.nan
            raise RuntimeError("died writing its update")

    monkeypatch.setattr(ranks, "apply_update", tears_then_dies)
    sha, job = run_job(config(workers=2, backend="thread", **ASYNC), protocol="lockstep")
    assert calls > 7
    assert sha == reference_sha(**ASYNC)
    assert sum(job.state.restarts_by_actor().values()) == 1


def test_lockstep_workers_killed_from_outside_at_arbitrary_moments_change_nothing() -> None:
    """kill -9 lands wherever a rank is: computing a gradient, waiting for a version, writing
    an update into the ring. Each time the run is aborted, the updates applied are kept and
    the next one redone on the same versions: the result stays the serial reference's."""
    fields = {**ASYNC, "epochs": 12}  # 144 updates
    sha, job = run_killing_workers(config(workers=2, backend="process", **fields))
    assert sha == reference_sha(**fields)
    assert job.state.restarts_by_actor() == {"worker-0": 2, "worker-1": 2}


@pytest.mark.parametrize(
    ("spec", "restarted"),
    [
        ("crash:coordinator@step=9", "coordinator"),
        ("kill:coordinator@step=6", "coordinator"),
        ("hang:coordinator@step=14", "coordinator"),
        ("kill:pool@step=9", "pool"),
        ("crash:loader@step=20", "loader"),
        ("hang:loader@epoch=2", "loader"),
    ],
)
@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_every_other_fault_target_is_survived_with_the_same_bits(spec, restarted, protocol) -> None:
    """The coordinator restarts from the latest snapshot (a checkpoint at step 5 or 10 holds
    the versions the next updates read): the same bits."""
    cfg = config(workers=2, backend="thread", checkpoint_every=5, **ASYNC)
    sha, job = run_job(cfg, faults=_faults(spec), step_timeout=0.5, protocol=protocol)
    assert sha == reference_sha(**ASYNC)
    assert job.state.restarts_by_actor()[restarted] == 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("backend", ["thread", "process"])
def test_chaos_is_survived_and_repeatable(backend, protocol) -> None:
    cfg = config(workers=2, backend=backend, **ASYNC)
    sha, job = run_job(cfg, chaos=Chaos(0.03, seed=3), max_restarts=50, protocol=protocol)
    assert sha == reference_sha(**ASYNC)
    assert job.state.restarts > 0


def _stopped_at(ckpt: Path, step: int, protocol: str = "auto") -> None:
    reached = threading.Event()

    def on_progress(p: Progress) -> None:
        if p.step >= step:
            reached.set()

    cfg = config(workers=2, backend="thread", epochs=3, **ASYNC)
    options = JobOptions(checkpoint_dir=str(ckpt), protocol=protocol)
    job = TrainingJob(cfg, dataset(), options, on_progress=on_progress)
    job.start()
    try:
        assert reached.wait(60)
    finally:
        job.stop()


@pytest.mark.parametrize(("stopped", "resumed"), [PROTOCOLS, PROTOCOLS[::-1]])
@pytest.mark.parametrize("step", [1, 5, 13])
def test_a_stop_resumes_mid_run_to_the_uninterrupted_bits(tmp_path, step, stopped, resumed):
    """Stopped anywhere (a stop lands between updates), resumed with another worker count and
    kind and the other protocol: the checkpoint's earlier versions make the next updates read
    what they would have."""
    _stopped_at(tmp_path, step, stopped)
    _, _, meta = load_checkpoint(tmp_path / "checkpoint.safetensors")
    assert meta["step"] >= step
    cfg = config(workers=3, backend="process", epochs=3, **ASYNC)
    options = JobOptions(checkpoint_dir=str(tmp_path), resume=True, protocol=resumed)
    job = TrainingJob(cfg, dataset(), options)
    assert params_sha256(job.run()["params"]) == reference_sha(epochs=3, **ASYNC)


def test_the_checkpoint_holds_the_earlier_versions_and_a_resume_checks_them(tmp_path) -> None:
    _stopped_at(tmp_path, 5)
    path = tmp_path / "checkpoint.safetensors"
    params, state, extra, meta = read_checkpoint(path)
    earlier = extra.pop(EARLIER_PARAMS)
    assert earlier.shape == (ASYNC["staleness"] - 1, params.size)
    optimizer = SGD(0.1, 0.5)
    optimizer.load_state(state)
    save_checkpoint(path, params, optimizer, meta, {EARLIER_PARAMS: earlier[:1]})  # one short
    cfg = config(workers=2, backend="thread", epochs=3, **ASYNC)
    match = r"tensor 'extra\.earlier_params' is float32\[1, 109386\]"
    with pytest.raises(ResumeError, match=match):
        TrainingJob(cfg, dataset(), JobOptions(checkpoint_dir=str(tmp_path), resume=True))
    with pytest.raises(ResumeError, match="staleness: checkpoint 3 vs now 2"):
        TrainingJob(
            config(workers=2, backend="thread", epochs=3, **{**ASYNC, "staleness": 2}),
            dataset(), JobOptions(checkpoint_dir=str(tmp_path), resume=True),
        )  # fmt: skip


def test_earlier_versions_in_a_checkpoint_of_another_algorithm_are_refused(tmp_path) -> None:
    cfg = config(workers=2, backend="thread")
    params = init_params(cfg)
    snap = Snapshot(0, params, {}, [], earlier=np.stack([params]))
    write_snapshot(tmp_path / "c.safetensors", cfg, snap, epoch_end=False)
    with pytest.raises(ResumeError, match=r"unexpected tensor 'extra\.earlier_params' for this"):
        read_resume_point(tmp_path / "c.safetensors", cfg, 768)


def test_options_choose_lockstep_where_it_runs_and_stepwise_on_request() -> None:
    cfg = config(workers=2, backend="thread", **ASYNC)
    assert resolve(cfg, JobOptions()).protocol == "async-lockstep"
    assert resolve(cfg, JobOptions(protocol="lockstep")).protocol == "async-lockstep"
    assert resolve(cfg, JobOptions(protocol="stepwise")).protocol == "async-stepwise"
    assert AsyncStepwiseDriver.unsupported("ray") is None
    assert "shared memory" in (AsyncLockstepDriver.unsupported("ray") or "")


def test_the_memory_bound_counts_the_ring_and_the_gradient_slots() -> None:
    sync = job_memory(config(workers=2, backend="thread"))
    four = job_memory(config(workers=2, backend="thread", **{**ASYNC, "staleness": 4}))
    p = 4 * 109_386  # float32 parameters
    assert four.total - sync.total == (4 + 1 + 4 * 4) * p + p  # ring, gradient slots; momentum
