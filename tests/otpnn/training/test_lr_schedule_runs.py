"""Learning-rate schedules keep the core guarantee: every schedule ends with the serial
reference's bits for 1 and 2 workers, thread and process, lockstep and stepwise, local SGD,
under a crash, and resumed mid-schedule; ``constant`` is the arithmetic of before schedules."""

from __future__ import annotations

import pytest
from threadpoolctl import threadpool_limits
from training_support import config, dataset, reference_sha, run_job

from otpnn.faults import parse_fault
from otpnn.model import SGD, init_params, params_sha256
from otpnn.reference import StepBuffers, reference_step
from otpnn.schedule import batch_indices, epoch_permutation, steps_per_epoch
from otpnn.training import JobOptions, ResumeError, TrainingFailed, TrainingJob

STEP = {"lr_schedule": "step", "lr_gamma": 0.5, "lr_warmup_steps": 3}
COSINE = {"lr_schedule": "cosine", "lr_min": 0.02, "lr_warmup_steps": 5}


def _fixed_lr_loop() -> str:
    """The base config trained by a plain loop whose optimizer never changes: what every run
    computed before schedules existed."""
    cfg, data = config(), dataset()
    params, optimizer = init_params(cfg), SGD(cfg.lr, cfg.momentum, cfg.weight_decay)
    buffers, n = StepBuffers(cfg, params.size), len(data.train_labels)
    with threadpool_limits(1):
        for epoch in range(1, cfg.epochs + 1):
            perm = epoch_permutation(n, cfg.seed, epoch)
            for k in range(steps_per_epoch(n, cfg.batch_size)):
                batch = batch_indices(perm, k, cfg.batch_size)
                reference_step(
                    cfg, params, optimizer, data.train_images, data.train_labels, batch, buffers
                )
    return params_sha256(params)


def test_constant_is_the_checksum_of_a_run_without_a_schedule() -> None:
    before = _fixed_lr_loop()
    assert reference_sha(lr_schedule="constant") == before
    sha, _ = run_job(config(lr_schedule="constant", workers=2, backend="thread"))
    assert sha == before


@pytest.mark.parametrize("schedule", [STEP, COSINE], ids=["step", "cosine"])
@pytest.mark.parametrize(
    ("workers", "backend", "fault", "protocol"),
    [
        (1, "thread", None, "auto"),
        (2, "process", None, "auto"),
        (2, "thread", "crash:worker=1@step=14", "auto"),
        (2, "thread", "crash:worker=0@step=7", "stepwise"),
    ],
    ids=["1-thread", "2-process", "2-thread-crash", "2-stepwise-crash"],
)
def test_every_schedule_gives_the_reference_bits(
    schedule, workers, backend, fault, protocol
) -> None:
    faults = (parse_fault(fault),) if fault else ()
    cfg = config(workers=workers, backend=backend, **schedule)
    sha, job = run_job(cfg, faults=faults, protocol=protocol)
    assert sha == reference_sha(**schedule)
    assert sha != reference_sha()  # the schedule changed the arithmetic
    assert job.state.restarts == (1 if fault else 0)


def test_local_sgd_follows_the_schedule_step_by_step_under_a_crash() -> None:
    local = {"algorithm": "local-sgd", "sync_every": 2, "warmup_steps": 3, **COSINE}
    sha, job = run_job(
        config(workers=2, backend="thread", **local), faults=(parse_fault("crash:worker=1@step=9"),)
    )
    assert sha == reference_sha(workers=2, **local)
    assert sha != reference_sha(workers=2, **{**local, "lr_schedule": "constant", "lr_min": 0.0})
    assert job.state.restarts == 1


def test_a_run_resumed_mid_schedule_ends_with_the_uninterrupted_bits(tmp_path) -> None:
    # The coordinator crashes at step 8 and the tree gives up: the checkpoint holds step 5.
    cfg = config(workers=2, backend="thread", checkpoint_every=5, **COSINE)
    failing = TrainingJob(
        cfg,
        dataset(),
        JobOptions(
            checkpoint_dir=str(tmp_path),
            faults=(parse_fault("crash:coordinator@step=8"),),
            max_restarts=0,
        ),
    )
    with pytest.raises(TrainingFailed):
        failing.run()
    resumed = TrainingJob(cfg, dataset(), JobOptions(checkpoint_dir=str(tmp_path), resume=True))
    assert resumed.state.latest_snapshot().step == 5
    assert params_sha256(resumed.run()["params"]) == reference_sha(**COSINE)


def test_resuming_with_another_schedule_or_a_cosines_length_is_refused(tmp_path) -> None:
    cfg = config(workers=1, backend="thread", epochs=1, **COSINE)
    TrainingJob(cfg, dataset(), JobOptions(checkpoint_dir=str(tmp_path))).run()
    for changed, named in (
        ({**COSINE, "lr_schedule": "step", "lr_min": 0.0}, "lr_schedule: checkpoint 'cosine'"),
        ({**COSINE, "lr_warmup_steps": 6}, "lr_warmup_steps: checkpoint 5 vs now 6"),
        ({**COSINE, "epochs": 2}, "epochs: checkpoint 1 vs now 2"),
    ):
        again = config(workers=1, backend="thread", **{"epochs": 1, **changed})
        with pytest.raises(ResumeError, match=named):
            TrainingJob(again, dataset(), JobOptions(checkpoint_dir=str(tmp_path), resume=True))


def test_a_step_schedule_may_be_extended_by_resuming_with_more_epochs(tmp_path) -> None:
    short = config(workers=2, backend="thread", epochs=1, **STEP)
    TrainingJob(short, dataset(), JobOptions(checkpoint_dir=str(tmp_path))).run()
    longer = config(workers=2, backend="thread", epochs=3, **STEP)
    resumed = TrainingJob(longer, dataset(), JobOptions(checkpoint_dir=str(tmp_path), resume=True))
    assert params_sha256(resumed.run()["params"]) == reference_sha(epochs=3, **STEP)
