"""The serial reference for asynchronous SGD with a fixed staleness: every update's gradient taken
on the parameters ``S`` updates old, in one process (the arithmetic of :mod:`otpnn.async_sgd`).

It is the oracle the async driver must match bit for bit, whatever its worker count and kind:
the micro-shard gradients, their in-order sum and the update are the calls the workers and the
driver make, only one after another.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from otpnn.async_sgd import VersionRing, apply_update
from otpnn.config import TrainConfig
from otpnn.data import Dataset
from otpnn.lr_schedule import LrSchedule
from otpnn.model import SGD, init_params, params_sha256, shard_gradient
from otpnn.reference import ReferenceResult, StepBuffers, epoch_row
from otpnn.schedule import Batches, epoch_permutation, steps_per_epoch
from otpnn.validation import split_dataset


def train_async_reference(
    cfg: TrainConfig, dataset: Dataset, *, on_epoch: Callable[[dict], None] | None = None
) -> ReferenceResult:
    """Train cfg.epochs epochs of async SGD; history rows as :func:`otpnn.reference.
    train_reference`'s (train loss and accuracy from the stale parameters each gradient used)."""
    dataset, holdout = split_dataset(dataset, cfg)
    images, labels = dataset.train_images, dataset.train_labels
    n = len(labels)
    per_epoch = steps_per_epoch(n, cfg.batch_size)
    batches = Batches(n, cfg.batch_size, cfg.effective_shard_size, per_epoch)
    lr_schedule = LrSchedule.of(cfg, per_epoch)
    initial = init_params(cfg)
    ring = VersionRing(np.empty((cfg.staleness + 1, initial.size), initial.dtype), cfg.staleness)
    ring.fill(0, initial, None)
    optimizer = SGD(cfg.lr, cfg.momentum, cfg.weight_decay)
    velocity = np.zeros_like(initial)
    buffers = StepBuffers(cfg, initial.size)
    result = ReferenceResult(initial, optimizer)
    with threadpool_limits(1):
        for epoch in range(1, cfg.epochs + 1):
            order = epoch_permutation(n, cfg.seed, epoch)
            loss, correct = 0.0, 0
            start = time.perf_counter()
            for t in range((epoch - 1) * per_epoch + 1, epoch * per_epoch + 1):
                offset, bounds = batches.shards(t)
                stale = ring.version(t - cfg.staleness)
                for k, (a, b) in enumerate(bounds):
                    idx = order[offset + a : offset + b]
                    shard_loss, shard_correct = shard_gradient(
                        stale, cfg.layer_sizes, cfg.activation, images[idx], labels[idx],
                        buffers.slots[k],
                    )  # fmt: skip
                    loss += shard_loss
                    correct += shard_correct
                apply_update(
                    lr_schedule.hyper(t), ring, velocity, buffers.slots[: len(bounds)], t,
                    bounds[-1][1],
                )  # fmt: skip
                result.steps += 1
            params = ring.version(result.steps)
            seconds = time.perf_counter() - start
            row = epoch_row(cfg, dataset, holdout, params, epoch, seconds, n, loss, correct)
            result.end_epoch(row, cfg, params, on_epoch)
    result.params = ring.version(result.steps).copy()
    if cfg.momentum:
        optimizer.velocity = velocity
    result.params_sha256 = params_sha256(result.params)
    return result
