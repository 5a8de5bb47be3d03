"""Process workers carry a title that `ps` shows: ``otpnn worker-I job=NAME``."""

from __future__ import annotations

from pathlib import Path

from training_support import config, dataset

from otpnn.training.job import TrainingJob


def test_process_workers_are_titled_with_their_index_and_job() -> None:
    job = TrainingJob(config(workers=2, backend="process", epochs=1), dataset(), name="t42")
    try:
        job.start()
        titles = {
            actor: Path(f"/proc/{pid}/cmdline").read_bytes().split(b"\0")[0].decode()
            for actor, pid in job.state.pids.items()
            if actor.startswith("worker-")
        }
        job.wait(timeout=120)
    finally:
        job.stop()
    assert titles == {"worker-0": "otpnn worker-0 job=t42", "worker-1": "otpnn worker-1 job=t42"}
