"""Stop a job at every kind of boundary, resume it (twice), and get the uninterrupted result.

The boundaries: mid-epoch, just after an epoch's end, inside an epoch's evaluation (a middle one
and the last one), and after the last commit. A stop is either before the last commit (resume
finishes the run) or after it (the job is done, and resuming it changes nothing); a coordinator
that outlives its kill writes nothing after the job was stopped.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from training_support import config, dataset, reference_sha

from otpnn.checkpoint import load_checkpoint, save_checkpoint
from otpnn.model import SGD, params_sha256
from otpnn.training import coordinator as coordinator_module
from otpnn.training.job import CHECKPOINT_FILE, JobOptions, ResumeError, TrainingJob
from otpnn.training.state import Progress

EPOCHS = 3
STEPS_PER_EPOCH = 12  # 768 samples, batch 64


def _job(ckpt: Path, resume: bool, on_progress: Callable[[Progress], None] | None = None,
         **overrides: Any) -> TrainingJob:  # fmt: skip
    cfg = config(**{"epochs": EPOCHS, "workers": 2, "backend": "thread", **overrides})
    options = JobOptions(checkpoint_dir=str(ckpt), resume=resume)
    return TrainingJob(cfg, dataset(), options, on_progress=on_progress)


def _finish(ckpt: Path) -> str:
    """Resume until done, twice: both end with the same checksum, the second trains nothing."""
    first = _job(ckpt, resume=True)
    sha = params_sha256(first.run()["params"])
    before = (ckpt / CHECKPOINT_FILE).read_bytes()
    again = _job(ckpt, resume=True)
    assert params_sha256(again.run()["params"]) == sha
    assert again.already_complete
    assert (ckpt / CHECKPOINT_FILE).read_bytes() == before
    return sha


def _stop_at_step(ckpt: Path, step: int) -> None:
    reached = threading.Event()

    def on_progress(p: Progress) -> None:
        if p.step >= step:
            reached.set()

    job = _job(ckpt, resume=False, on_progress=on_progress)
    job.start()
    try:
        assert reached.wait(60)
    finally:
        job.stop()
    assert job.state.result is None or step == EPOCHS * STEPS_PER_EPOCH


@pytest.mark.parametrize("step", [5, STEPS_PER_EPOCH, STEPS_PER_EPOCH + 1])
def test_a_stop_between_steps_resumes_to_the_uninterrupted_checksum(tmp_path, step) -> None:
    _stop_at_step(tmp_path, step)
    assert _finish(tmp_path) == reference_sha(epochs=EPOCHS)


class _BlockingEvaluation:
    """Holds the coordinator inside the evaluation of one epoch until released."""

    def __init__(self, epoch: int) -> None:
        self.epoch, self.calls = epoch, 0
        self.entered, self.release = threading.Event(), threading.Event()
        self._real = coordinator_module.evaluate

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls == self.epoch:
            self.entered.set()
            assert self.release.wait(30)
        return self._real(*args, **kwargs)


@pytest.mark.parametrize("epoch", [1, EPOCHS])
def test_a_stop_during_evaluation_resumes_to_the_uninterrupted_checksum(
    tmp_path, monkeypatch, epoch
) -> None:
    blocking = _BlockingEvaluation(epoch)
    monkeypatch.setattr(coordinator_module, "evaluate", blocking)
    job = _job(tmp_path, resume=False)
    job.start()
    stopper = threading.Thread(target=job.stop)
    try:
        assert blocking.entered.wait(60)
        stopper.start()  # the stop waits for the epoch being evaluated: a step boundary
        blocking.release.set()
        stopper.join(60)
    finally:
        blocking.release.set()
        job.stop()
    monkeypatch.undo()
    if epoch == EPOCHS:  # the stop came after the last commit: the job is done
        assert job.state.result is not None
    assert _finish(tmp_path) == reference_sha(epochs=EPOCHS)


def test_a_coordinator_killed_in_evaluation_writes_nothing_after_the_stop(
    tmp_path, monkeypatch
) -> None:
    blocking = _BlockingEvaluation(EPOCHS)
    monkeypatch.setattr(coordinator_module, "evaluate", blocking)
    job = _job(tmp_path, resume=False)
    job.start()
    try:
        assert blocking.entered.wait(60)
        checkpoint = tmp_path / CHECKPOINT_FILE
        before = checkpoint.read_bytes()
        job.stop(timeout=0.2)  # shorter than the evaluation: the coordinator is killed
        blocking.release.set()  # its thread runs on (Python cannot stop it)...
        coordinator_thread = [t for t in threading.enumerate() if "Coordinator" in t.name]
        for thread in coordinator_thread:
            thread.join(10)
        assert checkpoint.read_bytes() == before  # ...but writes nothing
    finally:
        blocking.release.set()
        job.stop()
    monkeypatch.undo()
    assert _finish(tmp_path) == reference_sha(epochs=EPOCHS)


def test_a_finished_run_resumes_to_already_complete(tmp_path) -> None:
    done = _job(tmp_path, resume=False)
    sha = params_sha256(done.run()["params"])
    assert _finish(tmp_path) == sha == reference_sha(epochs=EPOCHS)
    history = _job(tmp_path, resume=True).run()["history"]
    assert [row["epoch"] for row in history] == [1, 2, 3]


def test_resuming_with_fewer_epochs_than_the_checkpoint_holds_is_refused(tmp_path) -> None:
    _job(tmp_path, resume=False).run()
    with pytest.raises(ResumeError, match=r"past the end of a 2-epoch run.*--epochs 3 or more"):
        _job(tmp_path, resume=True, epochs=2)
    # More epochs continue the run, as one would have trained them at once.
    longer = _job(tmp_path, resume=True, epochs=4)
    assert params_sha256(longer.run()["params"]) == reference_sha(epochs=4)


@pytest.mark.parametrize(
    ("meta", "message"),
    [
        ({"step": None}, "invalid step=None"),
        ({"step": "12"}, "invalid step='12'"),
        ({"step": -1}, "invalid step=-1"),
        ({"step": 24}, "history has 1 epoch rows, but step 24 means 2"),
        ({"history": "yes"}, "invalid history"),
        ({"history": []}, "history has 0 epoch rows, but step 12 means 1"),
        ({"epoch_loss_sum": float("nan")}, "invalid epoch_loss_sum=nan"),
        ({"config": None}, "no config"),
    ],
)
def test_checkpoint_metadata_is_validated_like_any_input(tmp_path, meta, message) -> None:
    _stop_at_step(tmp_path, STEPS_PER_EPOCH)  # an epoch-end checkpoint at step 12 or later
    path = tmp_path / CHECKPOINT_FILE
    params, optimizer_state, saved = load_checkpoint(path)
    optimizer = SGD(0.2, 0.5)
    optimizer.load_state(optimizer_state)
    saved.update({"step": 12, "history": saved["history"][:1]}, **meta)
    if meta.get("step") is None and "step" in meta:
        del saved["step"]
    save_checkpoint(path, params, optimizer, saved)  # a valid file, with its SHA-256 right
    with pytest.raises(ResumeError, match=message.replace("[", r"\[")):
        _job(tmp_path, resume=True)


def test_a_checkpoint_made_on_other_cores_names_the_shard_size_to_pass(tmp_path, monkeypatch):
    """The default shard size follows the cores; a checkpoint records the effective one, so a
    resume where the default differs is refused with the option that reproduces the run."""
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {0, 1})  # 2 cores: 2 x 64 rows
    default = {"batch_size": 128, "shard_size": None}  # (the tests' config sets one)
    _job(tmp_path, resume=False, epochs=1, **default).run()
    assert load_checkpoint(tmp_path / CHECKPOINT_FILE)[2]["config"]["shard_size"] == 64
    monkeypatch.setattr("os.sched_getaffinity", lambda _pid: {0, 1, 2, 3})  # 4 x 32 rows
    with pytest.raises(ResumeError, match=r"shard_size: checkpoint 64 vs now 32.*--shard-size"):
        _job(tmp_path, resume=True, **default)
    resumed = _job(tmp_path, resume=True, batch_size=128, shard_size=64).run()
    want = reference_sha(epochs=EPOCHS, batch_size=128, shard_size=64)
    assert params_sha256(resumed["params"]) == want
