"""The trainer tests' small synthetic problem, importable by name from any test module
(``from conftest import`` would find whichever conftest.py was imported first)."""

from __future__ import annotations

import functools
import os
import signal
import time

from otpnn.config import TrainConfig
from otpnn.data import Dataset, synthetic_dataset
from otpnn.model import params_sha256
from otpnn.reference import train_reference
from otpnn.training import JobOptions, TrainingJob

# 768 samples, batch 64 -> 12 steps an epoch, 4 micro-shards a step; small but not trivial.
BASE = {
    "dataset": "synthetic",
    "synthetic_train": 768,
    "synthetic_test": 256,
    "epochs": 2,
    "batch_size": 64,
    "shard_size": 16,
    "seed": 7,
}


def config(**overrides: object) -> TrainConfig:
    return TrainConfig(**{**BASE, **overrides})


@functools.cache
def dataset() -> Dataset:
    cfg = config()
    return synthetic_dataset(cfg.seed, cfg.synthetic_train, cfg.synthetic_test)


@functools.cache
def reference_sha(**overrides: object) -> str:
    return train_reference(config(**overrides), dataset()).params_sha256


def run_job(cfg: TrainConfig, **options: object) -> tuple[str, TrainingJob]:
    job = TrainingJob(cfg, dataset(), JobOptions(**options))
    result = job.run()
    return params_sha256(result["params"]), job


# A fault of each worker kind (spec, worker backend, restarts expected): the algorithms whose
# contract covers recovered faults (local SGD, async) are each run against all of them.
WORKER_FAULT_CASES = [
    ("hang:worker=1@step=5", "thread", {"worker-1": 1}),
    ("hang:worker=0@step=13", "process", {"worker-0": 1}),
    ("exit:worker=0@step=13", "process", {"worker-0": 1}),
    ("slow=0.2:worker=any@step=4", "thread", {}),
    ("crash:worker=1@shard=30", "thread", {"worker-1": 1}),
]


def run_killing_workers(
    cfg: TrainConfig, every: int = 10, kills: int = 4
) -> tuple[str, TrainingJob]:
    """Train ``cfg`` (two process workers) while kill -9 hits worker 0, then 1, then 0... every
    ``every`` steps, wherever each is then; (checksum, job). Asserts every kill landed."""
    job = TrainingJob(cfg, dataset(), JobOptions(max_restarts=2 * kills + 2))
    job.start()
    landed = 0
    try:
        for k in range(kills):
            target = job.progress.step + every
            while job.progress.step < target and not job.state.done.is_set():
                time.sleep(0.002)
            if job.state.done.is_set():
                break
            os.kill(job.state.pids[f"worker-{k % 2}"], signal.SIGKILL)
            landed += 1
        result = job.wait(timeout=120)
    finally:
        job.stop()
    assert landed == kills, "the job ended before the kills"
    return params_sha256(result["params"]), job
