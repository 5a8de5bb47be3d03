"""Fault injection walk-through: break a training job on purpose and watch it recover.

Run it: ``python examples/fault_injection.py``. It trains a small synthetic problem four times
with two process workers and prints what happened each time:

1. fault-free, for the reference checksum;
2. a worker crashes, another is SIGKILLed, a third hangs (killed when its deadline runs out);
3. the coordinator crashes and resumes from its snapshot, the loader crashes (rest_for_one);
4. a worker killed from *outside* (``kill -9`` of its pid, as you would from another shell).

Every run must end with the same parameter checksum: recovery never changes the result.
"""

from __future__ import annotations

import os
import signal
import threading

from otpnn.config import TrainConfig
from otpnn.data import synthetic_dataset
from otpnn.faults import parse_fault
from otpnn.logs import configure_logging
from otpnn.model import params_sha256
from otpnn.training import JobOptions, TrainingJob

CONFIG = TrainConfig(
    dataset="synthetic", synthetic_train=1024, synthetic_test=256, epochs=2, workers=2, seed=1
)


def train(title: str, *specs: str, outside_kill_at: int | None = None) -> str:
    dataset = synthetic_dataset(CONFIG.seed, CONFIG.synthetic_train, CONFIG.synthetic_test)
    faults = tuple(parse_fault(s) for s in specs)
    job = TrainingJob(CONFIG, dataset, JobOptions(faults=faults, step_timeout=1.0))
    job.start()
    try:
        if outside_kill_at is not None:
            _kill_from_outside(job, outside_kill_at)
        result = job.wait(timeout=120)
    finally:
        job.stop()
    sha = params_sha256(result["params"])
    print(f"\n== {title}: {job.progress.step} steps, checksum {sha[:16]}")
    for e in job.state.events():
        if e.kind != "started":
            extra = (
                f" (recovered in {e.recovery_seconds * 1000:.0f} ms)" if e.recovery_seconds else ""
            )
            print(f"   step {e.step:>3}  {e.actor:<12} {e.kind:<15} {e.reason}{extra}")
    print(f"   restarts by actor: {job.state.restarts_by_actor()}")
    return sha


def _kill_from_outside(job: TrainingJob, step: int) -> None:
    """What `kill -9 PID` from another shell does, timed at a step."""

    def killer() -> None:
        while job.progress.step < step and not job.state.done.is_set():
            job.state.done.wait(0.005)
        pid = job.state.pids["worker-1"]
        print(f"   (kill -9 {pid}: worker-1, from outside, at step {job.progress.step})")
        os.kill(pid, signal.SIGKILL)

    threading.Thread(target=killer, daemon=True).start()


def main() -> None:
    configure_logging(quiet=True)  # the events below tell the story; set False for every log line
    clean = train("fault-free")
    checksums = [
        train(
            "worker crash, kill and hang",
            "crash:worker=1@step=5",
            "kill:worker=0@step=12",
            "hang:worker=any@step=20",
        ),
        train("coordinator and loader crash", "crash:coordinator@step=9", "crash:loader@epoch=2"),
        train("worker killed from outside", outside_kill_at=6),
    ]
    same = all(sha == clean for sha in checksums)
    print(f"\nall faulty runs end with the fault-free checksum: {same}")


if __name__ == "__main__":
    main()
