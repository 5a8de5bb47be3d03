"""Sync SGD against local SGD (H = 4, 16 by default) on MNIST, in one run: epoch seconds as
ratios to the plain single-process loop and to the no-communication bound measured in the same
run, test accuracy after the last epoch, and the synchronisation points an epoch takes.

The no-communication bound is two processes running the plain loop's gradient maths on half of
each batch at once, never waiting for each other (see benchmarks/trainer_mnist.py): no trainer
with two workers can beat it on this machine. Sync SGD waits for every worker at every step;
local SGD only at every average (every ``workers x H`` batches).

    python benchmarks/algorithms.py [--data-dir DIR] [--epochs 5] [--workers 2]
        [--backend thread|process|ray] [--sync-every 4,16] [--warmup-steps 0] [--train N]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path

from trainer_mnist import SHARED_MNIST, parallel_bound, plain_epoch

from otpnn.config import TrainConfig
from otpnn.data import load_dataset
from otpnn.interchange import limit_dataset
from otpnn.local_sgd import RoundSchedule
from otpnn.logs import configure_logging
from otpnn.schedule import steps_per_epoch
from otpnn.training import TrainingJob
from otpnn.training.job import FORKSERVER_PRELOAD
from supervision.process import ensure_forkserver


def syncs_per_epoch(cfg: TrainConfig, n_train: int) -> int:
    """Averages (local-sgd) or steps (sync) in the last epoch: the times workers wait."""
    per_epoch = steps_per_epoch(n_train, cfg.batch_size)
    if cfg.algorithm == "sync":
        return per_epoch
    schedule = RoundSchedule(per_epoch, cfg.workers or 1, cfg.sync_every, cfg.warmup_steps)
    first = (cfg.epochs - 1) * per_epoch + 1
    return sum(1 for _ in schedule.rounds(first, cfg.epochs * per_epoch))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("OTPNN_DATA_DIR", str(SHARED_MNIST)))
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--backend", choices=("thread", "process", "ray"), default="process")
    ap.add_argument("--sync-every", default="4,16", help="H values for local-sgd, comma-separated")
    ap.add_argument("--warmup-steps", type=int, default=0)
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
    print(f"MNIST {n} samples, {args.epochs} epochs, {args.workers} {args.backend} workers, "
          f"{os.cpu_count()} cores; epoch seconds: the mean over epochs")  # fmt: skip
    print(f"{'runner':<16} {'epoch s':>8} {'vs plain':>9} {'vs bound':>9} {'test acc':>9} "
          f"{'syncs/epoch':>12}")  # fmt: skip
    print(f"{'plain loop':<16} {plain:>8.3f} {1:>8.2f}x {bound / plain:>8.2f}x")
    print(f"{'no-comm bound':<16} {bound:>8.3f} {plain / bound:>8.2f}x {1:>8.2f}x")
    for label, cfg in runs.items():
        history = TrainingJob(cfg, dataset).run()["history"]
        seconds = sum(row["seconds"] for row in history) / len(history)
        print(
            f"{label:<16} {seconds:>8.3f} {plain / seconds:>8.2f}x {bound / seconds:>8.2f}x "
            f"{history[-1]['test_accuracy']:>9.4f} {syncs_per_epoch(cfg, n):>12}"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
