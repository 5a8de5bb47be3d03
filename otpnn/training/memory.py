"""How much memory a job will need, known from its config before anything is allocated.

A job's memory is not bounded by its parameter count alone: the lockstep protocol keeps one
gradient row per micro-shard of a batch in shared memory, so a tiny network with a huge batch
cut into one-row shards asks for shards x parameters. The CLI and the service therefore check
the whole job up front (every segment, every worker, the dataset once) and refuse one that does
not fit, with the figure it would need, instead of failing half-way with a MemoryError.

The estimate follows the allocations of the trainer (the coordinator's segments, the loader's
copy of the dataset, each worker's buffers); a protocol that changes its segments changes
:func:`job_memory` with it. It errs on the high side: the bound is a guard against jobs that
cannot run, not an accountant.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass

import numpy as np

from otpnn.config import INPUT_SIZE, TrainConfig
from otpnn.errors import UsageError
from otpnn.model import num_params
from otpnn.schedule import shard_bounds, steps_per_epoch
from otpnn.training.drivers import lockstep_rank

MNIST_SIZES = (60_000, 10_000)
# A worker process's own footprint before any job data: Python, numpy and the trainer.
PROCESS_OVERHEAD = 64 * 2**20
EVALUATION_ROWS = 1000  # the evaluation's chunk (otpnn.model.evaluate)
# Without OTPNN_MAX_MEMORY a job may take this share of the machine's memory.
DEFAULT_SHARE = 0.75
SHM_DIR = "/dev/shm"


class JobTooLarge(UsageError, ValueError):
    """The job would need more memory than it may have; the message says how much and why."""


@dataclass(frozen=True)
class MemoryNeed:
    """Bytes a job needs, by part (the largest named in refusals)."""

    shared: dict[str, int]  # shared-memory segments (/dev/shm)
    private: dict[str, int]  # the trainer's and the workers' own memory

    @property
    def total(self) -> int:
        return sum(self.shared.values()) + sum(self.private.values())

    @property
    def shared_total(self) -> int:
        return sum(self.shared.values())


def dataset_sizes(config: TrainConfig) -> tuple[int, int]:
    """(training, test) sample counts the config's dataset has."""
    if config.dataset == "synthetic":
        return config.synthetic_train, config.synthetic_test
    return MNIST_SIZES


def job_memory(config: TrainConfig) -> MemoryNeed:
    n_train, n_test = dataset_sizes(config)
    item = np.dtype(config.dtype).itemsize
    sizes = config.layer_sizes
    params = num_params(sizes) * item
    workers = config.workers or os.cpu_count() or 1
    shards = len(shard_bounds(min(config.batch_size, n_train), config.effective_shard_size))
    per_epoch = steps_per_epoch(n_train, config.batch_size)
    image_bytes = (n_train + n_test) * (INPUT_SIZE + 1)
    # The synthetic generator draws float64 noise for a whole split, and adds it to the images.
    generation = 2 * 8 * INPUT_SIZE * max(n_train, n_test) if config.dataset == "synthetic" else 0
    activations = sum(sizes) + sum(sizes[1:-1])  # inputs, activations, deltas per row
    shard_rows = config.effective_shard_size
    shared = {
        "dataset (shared with the workers)": n_train * (INPUT_SIZE + 1) + 8 * (n_train + 1),
        "parameters and momentum, double-buffered": 4 * params,
        f"gradient rows, one per micro-shard ({shards} of {shard_rows} rows)": shards * params,
        "per-shard statistics": per_epoch * shards * 2 * 8,
        "run control": 8 * int(np.prod(lockstep_rank.control_shape(workers))),
    }
    private = {
        "dataset (loaded)": image_bytes + generation,
        "coordinator buffers, snapshots and checkpoint writes": 8 * params,
        "workers' update buffers": 2 * params,
        "workers' shard buffers": workers * shard_rows * activations * item,
        "evaluation buffers": EVALUATION_ROWS * activations * item,
    }
    if config.algorithm == "local-sgd":  # see otpnn.training.drivers.local_sgd
        # The average in two rows (by round parity, lockstep) and a replica per worker.
        shared["local SGD: the average and a replica per worker"] = 2 * (2 + workers) * params
        # A share's private replica (2) and buffers (a row per shard, reduction, scratch).
        private["local SGD: workers' replicas"] = workers * (2 + shards + 2) * params
    if config.algorithm == "async":  # see otpnn.training.drivers.async_*
        s = config.staleness
        shared[f"async: {s + 1} parameter versions"] = (s + 1) * params
        # Gradient rows: S updates' in shared memory (stepwise), or each worker's (lockstep).
        shared["async: gradient rows"] = max(s, workers) * shards * params
        private["async: the momentum buffer"] = params
    if config.backend == "process":
        private["worker processes"] = workers * PROCESS_OVERHEAD
    if config.backend == "ray":  # every Ray worker holds its own copy of the parameters
        private["Ray workers' parameter copies"] = workers * (params + PROCESS_OVERHEAD)
    return MemoryNeed(shared, private)


def memory_limit() -> int:
    """Bytes a job may use: ``OTPNN_MAX_MEMORY`` (e.g. ``8G``, ``512M``, bytes) or a share of
    the machine's physical memory."""
    configured = os.environ.get("OTPNN_MAX_MEMORY")
    if configured:
        return parse_size(configured, "OTPNN_MAX_MEMORY")
    physical = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")
    return int(physical * DEFAULT_SHARE)


def shared_memory_free() -> int | None:
    """Free bytes in /dev/shm, where process workers' segments live (None: no such dir)."""
    try:
        st = os.statvfs(SHM_DIR)
    except OSError:
        return None
    return st.f_bavail * st.f_frsize


def check_memory(config: TrainConfig, limit: int | None = None) -> MemoryNeed:
    """The job's need, or JobTooLarge when it exceeds ``limit`` (default: memory_limit()) or
    its shared segments exceed what /dev/shm has free."""
    need = job_memory(config)
    limit = memory_limit() if limit is None else limit
    if need.total > limit:
        raise JobTooLarge(
            f"this job would need about {_human(need.total)} of memory, more than the "
            f"{_human(limit)} a job may use (set OTPNN_MAX_MEMORY to change it); "
            f"most of it: {_largest(need)}"
        )
    free = shared_memory_free()
    if config.backend != "ray" and free is not None and need.shared_total > free:
        raise JobTooLarge(
            f"this job would need about {_human(need.shared_total)} of shared memory, but "
            f"{SHM_DIR} has {_human(free)} free; most of it: {_largest(need)}"
        )
    return need


def parse_size(text: str, what: str) -> int:
    """Bytes from ``512M``, ``8G``, ``1.5GiB`` or a plain number; ValueError names ``what``."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([KMGT]?)(?:I?B)?\s*", text.upper())
    if match is None:
        raise JobTooLarge(f"{what}={text!r}: expected a size such as 512M or 8G")
    number, unit = float(match.group(1)), match.group(2)
    return int(number * 1024 ** " KMGT".index(unit or " "))


def _largest(need: MemoryNeed) -> str:
    name, size = max([*need.shared.items(), *need.private.items()], key=lambda kv: kv[1])
    return f"{name}, {_human(size)}"


def _human(n: float) -> str:
    if n < 1024:
        return f"{n:.0f} B"
    for unit in ("KiB", "MiB", "GiB"):
        n /= 1024
        if n < 1024:
            return f"{n:.1f} {unit}"
    return f"{n / 1024:.1f} TiB"
