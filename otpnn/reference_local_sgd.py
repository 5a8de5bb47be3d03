"""The serial reference for local SGD: every round's replicas trained one after another in one
process, then averaged (the schedule and arithmetic of :mod:`otpnn.local_sgd`).

It is the oracle the local SGD driver must match bit for bit, for the same worker count
(``cfg.workers``, None meaning 1): the number of replicas is part of the algorithm.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np
from threadpoolctl import threadpool_limits

from otpnn.config import TrainConfig
from otpnn.data import Dataset
from otpnn.local_sgd import Batch, LocalBuffers, RoundSchedule, average_into, local_steps
from otpnn.lr_schedule import LrSchedule
from otpnn.model import SGD, init_params, params_sha256
from otpnn.reference import ReferenceResult, epoch_row
from otpnn.schedule import Batches, epoch_permutation, shard_bounds, steps_per_epoch
from otpnn.validation import split_dataset


def train_local_sgd_reference(
    cfg: TrainConfig, dataset: Dataset, *, on_epoch: Callable[[dict], None] | None = None
) -> ReferenceResult:
    """Train cfg.epochs epochs of local SGD; history rows as :func:`otpnn.reference.
    train_reference`'s (train loss and accuracy from each replica's pre-update parameters)."""
    dataset, holdout = split_dataset(dataset, cfg)
    images, labels = dataset.train_images, dataset.train_labels
    n = len(labels)
    per_epoch = steps_per_epoch(n, cfg.batch_size)
    batches = Batches(n, cfg.batch_size, cfg.effective_shard_size, per_epoch)
    schedule = RoundSchedule.of(cfg, per_epoch)
    lr_schedule = LrSchedule.of(cfg, per_epoch)
    params = init_params(cfg)
    optimizer = SGD(cfg.lr, cfg.momentum, cfg.weight_decay)
    velocity = np.zeros_like(params)
    result = ReferenceResult(params, optimizer)
    n_shards = len(shard_bounds(cfg.batch_size, cfg.effective_shard_size))
    buffers = LocalBuffers(n_shards, cfg.layer_sizes, params.dtype, numpy_update=True)
    replicas = np.empty((cfg.workers or 1, 2, params.size), params.dtype)
    with threadpool_limits(1):
        for epoch in range(1, cfg.epochs + 1):
            order = epoch_permutation(n, cfg.seed, epoch)
            loss, correct = 0.0, 0
            start = time.perf_counter()
            first = (epoch - 1) * per_epoch + 1
            for rnd in schedule.rounds(first, epoch * per_epoch):
                for rank, share in enumerate(rnd.shares):
                    replica = replicas[rank]
                    replica[0], replica[1] = params, velocity
                    work = [Batch(s, *_rows(batches, s)) for s in share]
                    for losses, corrects in local_steps(
                        lr_schedule, cfg.layer_sizes, cfg.activation,
                        cfg.effective_shard_size, replica[0], replica[1], images, labels, order,
                        work, buffers,
                    ):  # fmt: skip
                        loss += sum(losses)
                        correct += sum(corrects)
                active = replicas[: len(rnd.shares)]
                average_into(active[:, 0], params)
                average_into(active[:, 1], velocity)
                result.steps += len(rnd.steps)
            seconds = time.perf_counter() - start
            row = epoch_row(cfg, dataset, holdout, params, epoch, seconds, n, loss, correct)
            result.end_epoch(row, cfg, params, on_epoch)
    if cfg.momentum:
        optimizer.velocity = velocity
    result.params_sha256 = params_sha256(params)
    return result


def _rows(batches: Batches, step: int) -> tuple[int, int]:
    """(offset in the epoch's order, rows) of step ``step``'s batch."""
    offset, bounds = batches.shards(step)
    return offset, bounds[-1][1]
