"""The serial reference: the trainer's exact arithmetic in one process, without actors.

It is the oracle the actor system must match bit for bit. A step takes the batch's indices from the
epoch permutation, computes every micro-shard's summed gradient on its own (shard_bounds order),
adds the shard gradients strictly in shard order (reduce_in_order) and applies the SGD update with
the mean gradient, at the rate :mod:`otpnn.lr_schedule` gives the step. A ``val_split`` holds
rows out first and ``keep_best`` keeps the best epoch, as :mod:`otpnn.validation` says. BLAS is
pinned to one thread, as in the workers.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits

from otpnn.config import TrainConfig
from otpnn.data import Dataset
from otpnn.lr_schedule import LrSchedule
from otpnn.model import SGD, evaluate, init_params, params_sha256, reduce_in_order, shard_gradient
from otpnn.schedule import batch_indices, epoch_permutation, shard_bounds, steps_per_epoch
from otpnn.validation import Best, Holdout, keep_if_best, split_dataset, validate


@dataclass
class ReferenceResult:
    params: np.ndarray
    optimizer: SGD
    history: list[dict] = field(default_factory=list)
    steps: int = 0
    params_sha256: str = ""
    best: Best | None = None  # with keep_best

    def end_epoch(self, row: dict[str, Any], cfg: TrainConfig, params: np.ndarray,
                  on_epoch: Callable[[dict], None] | None) -> None:  # fmt: skip
        """Record an epoch's row (:func:`epoch_row`), keep its parameters if best, tell
        ``on_epoch``: the end of an epoch in every serial reference."""
        self.history.append(row)
        self.best = keep_if_best(cfg, self.best, row, params)
        if on_epoch is not None:
            on_epoch(row)


class StepBuffers:
    """One gradient slot per micro-shard plus the reduction target, allocated once."""

    def __init__(self, cfg: TrainConfig, n_params: int) -> None:
        n_shards = len(shard_bounds(cfg.batch_size, cfg.effective_shard_size))
        self.slots = np.empty((n_shards, n_params), dtype=cfg.dtype)
        self.acc = np.empty(n_params, dtype=cfg.dtype)


def reference_step(
    cfg: TrainConfig,
    params: np.ndarray,
    optimizer: SGD,
    images: np.ndarray,
    labels: np.ndarray,
    batch: np.ndarray,
    buffers: StepBuffers,
) -> tuple[float, int]:
    """One synchronous SGD step on the samples `batch`; returns (loss sum, correct) of the batch
    under the pre-update parameters (shard loss sums added in shard order)."""
    bounds = shard_bounds(len(batch), cfg.effective_shard_size)
    loss, correct = 0.0, 0
    for k, (a, b) in enumerate(bounds):
        idx = batch[a:b]
        shard_loss, shard_correct = shard_gradient(
            params, cfg.layer_sizes, cfg.activation, images[idx], labels[idx], buffers.slots[k]
        )
        loss += shard_loss
        correct += shard_correct
    reduce_in_order(buffers.slots[: len(bounds)], buffers.acc)
    optimizer.step(params, buffers.acc, len(batch))
    return loss, correct


def train_reference(
    cfg: TrainConfig, dataset: Dataset, *, on_epoch: Callable[[dict], None] | None = None
) -> ReferenceResult:
    """Train cfg.epochs epochs; history rows carry epoch (from 1), seconds (training loop only),
    samples_per_second, train_loss/train_accuracy (during the epoch), test_loss/accuracy and,
    with a validation split, val_loss/accuracy. A local-sgd or async config trains by
    :mod:`otpnn.reference_local_sgd` or :mod:`otpnn.reference_async` (own loops, same rows)."""
    if cfg.algorithm == "local-sgd":
        from otpnn.reference_local_sgd import train_local_sgd_reference  # it imports this module

        return train_local_sgd_reference(cfg, dataset, on_epoch=on_epoch)
    if cfg.algorithm == "async":
        from otpnn.reference_async import train_async_reference  # it imports this module

        return train_async_reference(cfg, dataset, on_epoch=on_epoch)
    dataset, holdout = split_dataset(dataset, cfg)
    params = init_params(cfg)
    result = ReferenceResult(params, SGD(cfg.lr, cfg.momentum, cfg.weight_decay))
    buffers = StepBuffers(cfg, params.size)
    images, labels = dataset.train_images, dataset.train_labels
    n = len(labels)
    lr_schedule = LrSchedule.of(cfg, steps_per_epoch(n, cfg.batch_size))
    with threadpool_limits(1):
        for epoch in range(1, cfg.epochs + 1):
            perm = epoch_permutation(n, cfg.seed, epoch)
            loss, correct = 0.0, 0
            start = time.perf_counter()
            for step in range(steps_per_epoch(n, cfg.batch_size)):
                batch = batch_indices(perm, step, cfg.batch_size)
                result.optimizer.hyper = lr_schedule.hyper(result.steps + 1)
                step_loss, step_correct = reference_step(
                    cfg, params, result.optimizer, images, labels, batch, buffers
                )
                loss += step_loss
                correct += step_correct
                result.steps += 1
            seconds = time.perf_counter() - start
            row = epoch_row(cfg, dataset, holdout, params, epoch, seconds, n, loss, correct)
            result.end_epoch(row, cfg, params, on_epoch)
    result.params_sha256 = params_sha256(params)
    return result


def epoch_row(
    cfg: TrainConfig,
    dataset: Dataset,
    holdout: Holdout | None,
    params: np.ndarray,
    epoch: int,
    seconds: float,
    n: int,
    loss: float,
    correct: int,
) -> dict[str, Any]:
    """An epoch's report row: its training tallies over ``n`` samples, then the test set's
    and the held-out rows' (if any)."""
    test_loss, test_acc = evaluate(
        params, cfg.layer_sizes, cfg.activation, dataset.test_images, dataset.test_labels
    )
    return {
        "epoch": epoch,
        "seconds": seconds,
        "samples_per_second": n / seconds,
        "train_loss": loss / n,
        "train_accuracy": correct / n,
        "test_loss": test_loss,
        "test_accuracy": test_acc,
        **validate(cfg, params, holdout),
    }
