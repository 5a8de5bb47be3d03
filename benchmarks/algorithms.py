"""Sync SGD against local SGD (H = 4, 16 by default) and async SGD (S = 1, 2, 4) on MNIST, in
one run: epoch seconds as ratios to the plain single-process loop and to the no-communication
bound measured in the same run, test accuracy after the last epoch, and what an epoch exchanges.

The no-communication bound is two processes running the plain loop's gradient maths on half of
each batch at once, never waiting for each other (see benchmarks/trainer_mnist.py): no trainer
with two workers can beat it on this machine. Sync SGD waits for every worker at every step;
local SGD only at every average (every ``workers x H`` batches); async SGD combines the workers'
gradients at every update, but a worker waits only when it is S updates ahead.

Columns ``exch/epoch`` and ``MB/epoch`` count, per epoch (its last), from the config alone:

- exchanges: the times the workers' results are combined (sync: every step; local-sgd: every
  average; async: every update);
- bytes moved: parameter-sized vectors that cross between a worker and the shared state or the
  coordinator (shared memory, or Ray's object store): sync, per step, the parameters read by
  each worker and one gradient row per micro-shard written; async, per update, the version read
  by each message (``min(shards, ceil(workers / S))`` of them) and one gradient row per shard;
  local-sgd, per round, the parameters and momentum read and the replica's written back by each
  active rank. (Lockstep's in-place reduction, which re-reads the gradient rows, is not counted.)

Async rows train with ``--async-lr`` and ``--async-momentum`` (default 0.2 and 0: momentum on
gradients S updates old overshoots, and at S = 4 with the default momentum 0.5 MNIST diverges).

    python benchmarks/algorithms.py [--data-dir DIR] [--epochs 5] [--workers 2]
        [--backend thread|process|ray] [--sync-every 4,16] [--warmup-steps 0]
        [--staleness 1,2,4] [--async-lr 0.2] [--async-momentum 0] [--train N]
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import os
import sys
from pathlib import Path

import numpy as np
from trainer_mnist import SHARED_MNIST, parallel_bound, plain_epoch

from otpnn.config import TrainConfig
from otpnn.data import load_dataset
from otpnn.interchange import limit_dataset
from otpnn.local_sgd import RoundSchedule
from otpnn.logs import configure_logging
from otpnn.model import num_params
from otpnn.schedule import Batches, steps_per_epoch
from otpnn.training import TrainingJob
from otpnn.training.job import FORKSERVER_PRELOAD
from supervision.process import ensure_forkserver


def exchanges_per_epoch(cfg: TrainConfig, n_train: int) -> tuple[int, int]:
    """(exchanges, bytes moved) in the last epoch, counted as the module says."""
    per_epoch = steps_per_epoch(n_train, cfg.batch_size)
    vector = num_params(cfg.layer_sizes) * np.dtype(cfg.dtype).itemsize
    workers = cfg.workers or 1
    batches = Batches(n_train, cfg.batch_size, cfg.effective_shard_size, per_epoch)
    steps = range((cfg.epochs - 1) * per_epoch + 1, cfg.epochs * per_epoch + 1)
    shards = [len(batches.shards(t)[1]) for t in steps]
    if cfg.algorithm == "sync":
        return per_epoch, sum(min(workers, k) + k for k in shards) * vector
    if cfg.algorithm == "async":
        runs = [min(k, math.ceil(workers / cfg.staleness)) for k in shards]
        return per_epoch, sum(r + k for r, k in zip(runs, shards, strict=True)) * vector
    schedule = RoundSchedule(per_epoch, workers, cfg.sync_every, cfg.warmup_steps)
    rounds = list(schedule.rounds(steps[0], steps[-1]))
    return len(rounds), sum(4 * len(r.shares) for r in rounds) * vector


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("OTPNN_DATA_DIR", str(SHARED_MNIST)))
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--backend", choices=("thread", "process", "ray"), default="process")
    ap.add_argument("--sync-every", default="4,16", help="H values for local-sgd, comma-separated")
    ap.add_argument("--warmup-steps", type=int, default=0)
    ap.add_argument("--staleness", default="1,2,4", help="S values for async, comma-separated")
    ap.add_argument("--async-lr", type=float, default=0.2)
    ap.add_argument("--async-momentum", type=float, default=0.0)
    ap.add_argument("--train", type=int, default=0, help="Use the first N training images (0: all)")
    args = ap.parse_args()
    configure_logging(quiet=True)
    ensure_forkserver(FORKSERVER_PRELOAD)

    base = TrainConfig(
        dataset="mnist", data_dir=str(Path(args.data_dir)), epochs=args.epochs,
        workers=args.workers, backend=args.backend,
    )  # fmt: skip
    dataset = load_dataset(base, download=False)
    if args.train:
        dataset = limit_dataset(dataset, args.train, len(dataset.test_labels))
    n = len(dataset.train_labels)
    one_epoch = dataclasses.replace(base, epochs=1)
    plain, _ = plain_epoch(one_epoch, dataset, 1)
    bound, _ = parallel_bound(one_epoch, False, processes=args.workers)
    if args.train:  # the bound's children train on the whole set: scaled to the subset
        bound *= n / 60000
        print("(--train: the no-communication bound is scaled from the whole set: approximate)")
    runs = {"sync": base}
    for h in (int(v) for v in args.sync_every.split(",")):
        runs[f"local-sgd H={h}"] = dataclasses.replace(
            base, algorithm="local-sgd", sync_every=h, warmup_steps=args.warmup_steps
        )
    for staleness in (int(v) for v in args.staleness.split(",")):
        runs[f"async S={staleness}"] = dataclasses.replace(
            base, algorithm="async", staleness=staleness, lr=args.async_lr,
            momentum=args.async_momentum,
        )  # fmt: skip
    print(f"MNIST {n} samples, {args.epochs} epochs, {args.workers} {args.backend} workers, "
          f"{os.cpu_count()} cores; epoch seconds: the mean over epochs")  # fmt: skip
    print(f"{'runner':<16} {'epoch s':>8} {'vs plain':>9} {'vs bound':>9} {'test acc':>9} "
          f"{'exch/epoch':>11} {'MB/epoch':>9}")  # fmt: skip
    print(f"{'plain loop':<16} {plain:>8.3f} {1:>8.2f}x {bound / plain:>8.2f}x")
    print(f"{'no-comm bound':<16} {bound:>8.3f} {plain / bound:>8.2f}x {1:>8.2f}x")
    for label, cfg in runs.items():
        history = TrainingJob(cfg, dataset).run()["history"]
        seconds = sum(row["seconds"] for row in history) / len(history)
        exchanges, moved = exchanges_per_epoch(cfg, n)
        print(
            f"{label:<16} {seconds:>8.3f} {plain / seconds:>8.2f}x {bound / seconds:>8.2f}x "
            f"{history[-1]['test_accuracy']:>9.4f} {exchanges:>11} {moved / 1e6:>9.1f}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
