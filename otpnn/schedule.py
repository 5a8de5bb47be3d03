"""Data order and work split: pure functions of (n, seed, epoch, sizes), shared by every trainer.

The reference loop and the actor trainer both call these, so they visit the same samples in the
same order and cut each batch into the same micro-shards. Epochs are numbered from 1, the same
number that appears in reports.
"""

from __future__ import annotations

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
