"""Local SGD (post-local SGD): the rounds, the deal of batches, a replica's local steps and
the average. Pure functions shared by the serial reference and the actor workers, so both do
the same arithmetic in the same order.

The schedule, for ``N`` workers, ``H`` local steps between averages and ``W`` warm-up steps
(steps are batches, numbered from 1 across epochs, ``S`` a epoch; exactly as many as sync SGD):

- Steps 1..W are warm-up: each is a round of its own, an ordinary synchronous step (the
  batch's micro-shard gradients summed in shard order, one update), the bits of ``sync``.
- From step ``max(W + 1, first step of the epoch)`` on, an epoch's steps are cut into rounds
  of ``N * H`` consecutive batches; the epoch's last round may be shorter (``M`` batches). A
  round never crosses an epoch's end, so epoch ends are averaging boundaries.
- The deal: a round of ``M`` batches has ``n = min(N, M)`` active ranks; rank ``r`` takes the
  contiguous batches ``split(M, n, r)`` of the round (a full round: batches ``r*H .. r*H+H-1``).
  Ranks are not workers: any live worker may compute any rank's share (a lost one is redone).
- A rank's replica starts from the round's global parameters and momentum buffer and takes one
  SGD step per batch (micro-shard gradients summed in shard order, the mean applied, exactly as
  a synchronous step would on that batch alone).
- The average: the active replicas' parameters are added in rank order (a left fold from rank
  0), then divided by ``n``; the momentum buffers likewise. The momentum is averaged, not kept
  per replica (PyTorch's PostLocalSGDOptimizer keeps it per replica): the state at every
  averaging boundary is then one (parameters, momentum) pair, as in sync SGD, so checkpoints,
  resumes and a lost replica's restart need nothing more. A round of one replica (warm-up)
  divides by 1, which changes no bit.

The state is whole only at averaging boundaries: a run stops, checkpoints and resumes there.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass

import numpy as np

from otpnn.config import TrainConfig
from otpnn.lr_schedule import LrSchedule
from otpnn.model import (
    layer_views,
    layers_gradient,
    num_params,
    reduce_and_update,
    reduce_in_order,
    sgd_update,
)
from otpnn.schedule import shard_bounds


def split(n: int, parts: int, part: int) -> tuple[int, int]:
    """Bounds of ``part`` of ``parts`` contiguous, near-equal pieces of range(n) (the same
    rule as the fault planner's; here to keep this module free of the actor package)."""
    return n * part // parts, n * (part + 1) // parts


@dataclass(frozen=True, slots=True)
class Round:
    """Steps ``first..last`` (one averaging round); ``shares[r]``: rank r's steps, in order."""

    first: int
    last: int
    shares: tuple[range, ...]

    @property
    def steps(self) -> range:
        return range(self.first, self.last + 1)


@dataclass(frozen=True, slots=True)
class RoundSchedule:
    """Where a local SGD job's rounds begin and end, and who takes which batch."""

    steps_per_epoch: int
    workers: int
    sync_every: int
    warmup_steps: int

    @classmethod
    def of(cls, cfg: TrainConfig, steps_per_epoch: int) -> RoundSchedule:
        """The rounds of ``cfg`` (a local-sgd config) with ``steps_per_epoch`` steps an epoch."""
        return cls(steps_per_epoch, cfg.workers or 1, cfg.sync_every, cfg.warmup_steps)

    def last_of_round(self, step: int) -> int:
        """The last step of the round that holds ``step``: the next averaging boundary."""
        if step <= self.warmup_steps:
            return step
        epoch_first = (step - 1) // self.steps_per_epoch * self.steps_per_epoch + 1
        start = max(epoch_first, self.warmup_steps + 1)
        size = self.workers * self.sync_every
        end = start + ((step - start) // size + 1) * size - 1
        return min(end, epoch_first + self.steps_per_epoch - 1)

    def round_at(self, first: int) -> Round:
        """The round that begins at step ``first`` (an averaging boundary + 1)."""
        last = self.last_of_round(first)
        m = last - first + 1
        n = min(1 if last <= self.warmup_steps else self.workers, m)
        shares = tuple(range(first + a, first + b) for a, b in (split(m, n, r) for r in range(n)))
        return Round(first, last, shares)

    def rounds(self, first: int, last: int) -> Iterator[Round]:
        """The rounds of steps ``first..last`` (``first`` begins a round, ``last`` ends one)."""
        step = first
        while step <= last:
            r = self.round_at(step)
            yield r
            step = r.last + 1


@dataclass(frozen=True, slots=True)
class Batch:
    """One batch of a share: rows ``offset : offset + rows`` of the epoch's order."""

    step: int
    offset: int
    rows: int


class LocalBuffers:
    """Scratch for a replica's local steps: a gradient slot per micro-shard (and its layer
    views); with ``numpy_update``, also the reduction target and the update's scratch."""

    def __init__(
        self, n_shards: int, sizes: tuple[int, ...], dtype: np.dtype, *, numpy_update: bool = False
    ) -> None:
        self.slots = np.empty((n_shards, num_params(sizes)), dtype)
        self.slot_layers = [layer_views(row, sizes) for row in self.slots]
        self.numpy_update = numpy_update
        self.acc = np.empty(self.slots.shape[1] if numpy_update else 0, dtype)
        self.scratch = np.empty_like(self.acc)


def local_steps(
    lr_schedule: LrSchedule,
    sizes: tuple[int, ...],
    activation: str,
    shard_size: int,
    params: np.ndarray,
    velocity: np.ndarray,
    images: np.ndarray,
    labels: np.ndarray,
    order: np.ndarray,
    batches: Sequence[Batch],
    buffers: LocalBuffers,
) -> list[tuple[list[float], list[int]]]:
    """Train the replica (``params``, ``velocity``, updated in place) one SGD step per batch, at
    the batch's step's rate; per batch its shards' (loss sums, correct counts) under the
    parameters before its step.

    The update is the compiled pass of :func:`~otpnn.model.reduce_and_update`, in place; with
    ``buffers.numpy_update``, the numpy calls it reproduces bit for bit (the serial reference,
    which so holds the workers' pass to them)."""
    layers = layer_views(params, sizes)
    out = []
    for batch in batches:
        rows = order[batch.offset : batch.offset + batch.rows]
        bounds = shard_bounds(batch.rows, shard_size)
        losses, corrects = [], []
        for k, (a, b) in enumerate(bounds):
            idx = rows[a:b]
            loss, correct = layers_gradient(
                layers, buffers.slot_layers[k], activation, images[idx], labels[idx]
            )
            losses.append(loss)
            corrects.append(correct)
        hyper, grads = lr_schedule.hyper(batch.step), buffers.slots[: len(bounds)]
        if not buffers.numpy_update:
            reduce_and_update(
                hyper, grads, params, velocity, batch.rows, params_out=params,
                velocity_out=velocity,
            )  # fmt: skip
        else:
            grad = grads[0] if len(bounds) == 1 else reduce_in_order(grads, buffers.acc)
            sgd_update(
                hyper, params, velocity, grad, batch.rows, params_out=params,
                velocity_out=velocity, scratch=buffers.scratch,
            )  # fmt: skip
        out.append((losses, corrects))
    return out


def average_into(replicas: Sequence[np.ndarray] | np.ndarray, out: np.ndarray) -> np.ndarray:
    """``out`` = (replicas[0] + replicas[1] + ... , added left to right) / len(replicas)."""
    np.copyto(out, replicas[0])
    for replica in replicas[1:]:
        out += replica
    out /= len(replicas)
    return out
