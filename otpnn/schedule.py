"""Data order and work split: pure functions of (n, seed, epoch, sizes), shared by every trainer.

The reference loop and the actor trainer both call these, so they visit the same samples in the
same order and cut each batch into the same micro-shards. Epochs are numbered from 1, the same
number that appears in reports.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


def epoch_permutation(n: int, seed: int, epoch: int) -> np.ndarray:
    """The order of the n training samples in `epoch`: deterministic from (seed, epoch) alone,
    so a restarted job or a second machine derives it without communication."""
    return np.random.default_rng((seed, epoch)).permutation(n).astype(np.int64, copy=False)


def steps_per_epoch(n: int, batch_size: int) -> int:
    """Number of batches; the last, partial batch is trained, not dropped."""
    return -(-n // batch_size)


def batch_indices(perm: np.ndarray, step_in_epoch: int, batch_size: int) -> np.ndarray:
    """Sample indices of one batch: a view of the permutation (no copy)."""
    if not 0 <= step_in_epoch < steps_per_epoch(len(perm), batch_size):
        raise IndexError(f"step {step_in_epoch} out of range for {len(perm)} samples")
    start = step_in_epoch * batch_size
    return perm[start : start + batch_size]


def shard_bounds(batch_len: int, shard_size: int) -> list[tuple[int, int]]:
    """Contiguous [start, stop) micro-shards of a batch, in order; the last may be shorter."""
    return [(a, min(a + shard_size, batch_len)) for a in range(0, batch_len, shard_size)]


@dataclass(frozen=True, slots=True)
class Batches:
    """How a job's steps (numbered from 1 across epochs) map to samples and micro-shards:
    everything a worker needs to find its shards without asking."""

    n_train: int
    batch_size: int
    shard_size: int
    steps_per_epoch: int

    def shards(self, step: int) -> tuple[int, list[tuple[int, int]]]:
        """(offset of the step's batch in the epoch's order, its micro-shards' bounds)."""
        lo = ((step - 1) % self.steps_per_epoch) * self.batch_size
        return lo, shard_bounds(min(self.batch_size, self.n_train - lo), self.shard_size)

    def rows(self, step: int) -> int:
        """Samples in the step's batch (the epoch's last may be short)."""
        lo = ((step - 1) % self.steps_per_epoch) * self.batch_size
        return min(self.batch_size, self.n_train - lo)

    def shard_count(self, step: int) -> int:
        """``len(self.shards(step)[1])``, without making the list."""
        return -(-self.rows(step) // self.shard_size)

    def shards_before(self, step: int) -> int:
        """Micro-shards in steps 1..``step`` (what ``shard=N`` faults count)."""
        full = len(shard_bounds(self.batch_size, self.shard_size))
        last_rows = self.n_train - (self.steps_per_epoch - 1) * self.batch_size
        last = len(shard_bounds(last_rows, self.shard_size))
        epochs, k = divmod(step, self.steps_per_epoch)
        return epochs * ((self.steps_per_epoch - 1) * full + last) + k * full
