"""Epoch time of otpnn's tree against the loop a user would write instead, side by side.

For each batch size: one epoch of MNIST with a plain single-process numpy loop (one GEMM chain per
batch, single-threaded BLAS), then one epoch of the actor trainer with 1, 2 (and 4) workers of
each backend, all in the same run. Prints epoch seconds and the speed-up over the plain loop
(> 1 is faster), and checks that every trainer run ends with the same parameter checksum.

    python benchmarks/trainer_mnist.py [--data-dir DIR] [--batch-sizes 64,256,1024]
                                       [--workers 1,2,4] [--backends thread,process]
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from otpnn.config import TrainConfig
from otpnn.data import load_dataset
from otpnn.logs import configure_logging
from otpnn.model import SGD, init_params, params_sha256, shard_gradient
from otpnn.schedule import batch_indices, epoch_permutation, steps_per_epoch
from otpnn.training.job import JobOptions, TrainingJob

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def plain_epoch(cfg: TrainConfig, images: np.ndarray, labels: np.ndarray) -> float:
    """One epoch of the plain loop: the whole batch in one forward/backward, no actors."""
    params = init_params(cfg)
    grad = np.empty_like(params)
    opt = SGD(cfg.lr, cfg.momentum, cfg.weight_decay)
    perm = epoch_permutation(len(labels), cfg.seed, 1)
    with threadpool_limits(1):
        start = time.perf_counter()
        for step in range(steps_per_epoch(len(labels), cfg.batch_size)):
            idx = batch_indices(perm, step, cfg.batch_size)
            shard_gradient(params, cfg.layer_sizes, cfg.activation, images[idx], labels[idx], grad)
            opt.step(params, grad, len(idx))
        return time.perf_counter() - start


def trainer_epoch(cfg: TrainConfig, dataset) -> tuple[float, str]:
    job = TrainingJob(cfg, dataset, JobOptions())
    result = job.run()
    return result["history"][0]["seconds"], params_sha256(result["params"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("OTPNN_DATA_DIR", str(SHARED_MNIST)))
    ap.add_argument("--batch-sizes", default="64,256,1024")
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--backends", default="thread,process")
    ap.add_argument("--repeat", type=int, default=1, help="Runs per cell; the best is kept.")
    ap.add_argument(
        "--shards-per-batch",
        type=int,
        default=0,
        help="Micro-shards per batch (shard size = batch / K); 0 = the config default (4).",
    )
    args = ap.parse_args()
    configure_logging(quiet=True)

    base = TrainConfig(dataset="mnist", data_dir=args.data_dir, epochs=1)
    dataset = load_dataset(base, download=False)
    images, labels = dataset.train_images, dataset.train_labels
    print(f"MNIST {len(labels)} samples, {os.cpu_count()} cores, 1 BLAS thread per worker")
    print(
        f"{'batch':>5} {'runner':<18} {'epoch s':>8} {'vs plain':>9}  checksum   (shards/batch:"
        f" {args.shards_per_batch or 4})"
    )
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        shard = -(-batch // args.shards_per_batch) if args.shards_per_batch else None
        cfg = TrainConfig(
            **{**base.to_dict(), "batch_size": batch, "hidden": base.hidden, "shard_size": shard}
        )
        plain = min(plain_epoch(cfg, images, labels) for _ in range(args.repeat))
        print(f"{batch:>5} {'plain loop':<18} {plain:>8.3f} {1.0:>8.2f}x")
        sums = set()
        for backend in args.backends.split(","):
            for workers in (int(w) for w in args.workers.split(",")):
                run = dict(cfg.to_dict(), hidden=cfg.hidden, backend=backend, workers=workers)
                results = [trainer_epoch(TrainConfig(**run), dataset) for _ in range(args.repeat)]
                seconds = min(s for s, _ in results)
                sums.update(c for _, c in results)
                label = f"{workers} {backend}"
                ratio = plain / seconds
                print(f"{batch:>5} {label:<18} {seconds:>8.3f}{ratio:>8.2f}x  {results[0][1][:12]}")
        print(f"{batch:>5} checksums identical across runners: {len(sums) == 1}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
