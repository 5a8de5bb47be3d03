"""What crosses a mailbox in a training job: ids, versions and small numbers, never arrays.

Arrays (dataset, permutation, parameters, gradients) live in shared memory; a message names the
segments by their descriptors so that a worker that restarted, or a coordinator that restarted
with new segments, attaches to the right ones.
"""

from __future__ import annotations

from dataclasses import dataclass

from supervision.shm import ArrayDescriptor


@dataclass(frozen=True, slots=True)
class DataSegments:
    """The Loader's shared arrays: uint8 images (N, 784), labels (N,), and the permutation.

    ``perm`` holds ``N + 1`` int64: element 0 is the epoch it was drawn for, the rest the order.
    """

    images: ArrayDescriptor
    labels: ArrayDescriptor
    perm: ArrayDescriptor


@dataclass(frozen=True, slots=True)
class Shard:
    """Micro-shard ``index`` of the current batch: rows ``lo:hi`` of the epoch's permutation."""

    index: int
    lo: int
    hi: int


@dataclass(frozen=True, slots=True)
class ComputeShards:
    """Coordinator -> Worker: compute these shards against parameter version ``step``, row
    ``(step - 1) % 2`` of ``params`` (the stepwise protocol; see the coordinator).

    The worker writes the summed gradient of shard ``k`` into row ``k`` of ``grads`` and replies
    with one :class:`ShardResult` per shard. ``fault`` is an injected fault to act out first
    (see :mod:`otpnn.faults`), ``None`` almost always.
    """

    step: int
    epoch: int
    params: ArrayDescriptor
    grads: ArrayDescriptor
    shards: tuple[Shard, ...]
    fault: str | None = None


@dataclass(frozen=True, slots=True)
class ShardResult:
    index: int
    loss_sum: float
    correct: int
