"""Epoch time of otpnn's tree against the loop a user would write instead, side by side.

For each batch size: one epoch of MNIST with a plain single-process numpy loop (one GEMM chain per
batch, single-threaded BLAS), then one epoch of the actor trainer with 1, 2 (and 4) workers of
each backend (and protocol), all in the same run. Prints epoch seconds and the speed-up over the
plain loop (> 1 is faster), and checks that every trainer run ends with the same checksum.

It also measures what this machine allows right now: two processes running the plain loop's
gradient maths on half a batch each, at the same time, first with no communication at all, then
waiting for each other after every step (a bare shared-memory barrier, nothing else). The first
bounds what two workers can reach here (on a shared or virtual machine two busy cores are often
not twice one); the second, what a synchronous step can reach (each step waits for the slower
core of the two, and on a virtual machine the two are not always equally fast).

    python benchmarks/trainer_mnist.py [--data-dir DIR] [--batch-sizes 64,256,1024]
                                       [--workers 1,2,4] [--backends thread,process]
                                       [--protocols lockstep,stepwise]
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import sys
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from otpnn.config import TrainConfig
from otpnn.data import load_dataset
from otpnn.logs import configure_logging
from otpnn.model import SGD, init_params, params_sha256, shard_gradient
from otpnn.schedule import batch_indices, epoch_permutation, shard_bounds, steps_per_epoch
from otpnn.training import JobOptions, TrainingJob
from otpnn.training.job import FORKSERVER_PRELOAD
from supervision.process import ensure_forkserver

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


def plain_epoch(cfg: TrainConfig, images: np.ndarray, labels: np.ndarray) -> tuple[float, str]:
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
        return time.perf_counter() - start, ""


def _half_batch_loop(cfg: TrainConfig, rows: int, start, seconds, steps_done, me: int) -> None:
    """In a child: the gradient maths of one epoch on ``rows`` samples a step, timed from
    when every child is ready; with ``steps_done`` (a shared array, one cell per child), each
    step also waits until every child has finished it."""
    with threadpool_limits(1):
        data = load_dataset(cfg, download=False)
        images, labels = data.train_images, data.train_labels
        params = init_params(cfg)
        grad = np.empty_like(params)
        perm = epoch_permutation(len(labels), cfg.seed, 1)
        start.wait()
        begin = time.perf_counter()
        for step in range(steps_per_epoch(len(labels), cfg.batch_size)):
            idx = batch_indices(perm, step, cfg.batch_size)[:rows]
            shard_gradient(params, cfg.layer_sizes, cfg.activation, images[idx], labels[idx], grad)
            if steps_done is not None:
                steps_done[me] = step + 1
                while min(steps_done) <= step:
                    pass
        seconds.put(time.perf_counter() - begin)


def parallel_bound(cfg: TrainConfig, synchronous: bool, processes: int = 2) -> tuple[float, str]:
    """Seconds of the slowest of ``processes`` half-batch loops run at once."""
    ctx = multiprocessing.get_context("forkserver")
    start, seconds = ctx.Barrier(processes), ctx.Queue()
    steps_done = ctx.Array("q", processes, lock=False) if synchronous else None
    rows = -(-cfg.batch_size // processes)
    children = [
        ctx.Process(target=_half_batch_loop, args=(cfg, rows, start, seconds, steps_done, i))
        for i in range(processes)
    ]
    for child in children:
        child.start()
    times = [seconds.get(timeout=300) for _ in children]
    for child in children:
        child.join()
    return max(times), ""


def trainer_epoch(cfg: TrainConfig, dataset, protocol: str) -> tuple[float, str]:
    job = TrainingJob(cfg, dataset, JobOptions(protocol=protocol))
    result = job.run()
    return result["history"][0]["seconds"], params_sha256(result["params"])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("OTPNN_DATA_DIR", str(SHARED_MNIST)))
    ap.add_argument("--batch-sizes", default="64,256,1024")
    ap.add_argument("--workers", default="1,2,4")
    ap.add_argument("--backends", default="thread,process")
    ap.add_argument(
        "--protocols",
        default="lockstep",
        help="lockstep (workers run the steps) and/or stepwise (the coordinator does).",
    )
    ap.add_argument(
        "--repeat", type=int, default=3, help="Rounds of every runner; each one's best counts."
    )
    ap.add_argument(
        "--shards-per-batch",
        type=int,
        default=0,
        help="Micro-shards per batch (shard size = batch / K); 0 = the config's default.",
    )
    args = ap.parse_args()
    configure_logging(quiet=True)
    ensure_forkserver(FORKSERVER_PRELOAD)  # warm worker processes, as `otpnn train` has them

    base = TrainConfig(dataset="mnist", data_dir=args.data_dir, epochs=1)
    dataset = load_dataset(base, download=False)
    images, labels = dataset.train_images, dataset.train_labels
    print(f"MNIST {len(labels)} samples, {os.cpu_count()} cores, 1 BLAS thread per worker")
    print(f"{'batch':>5} {'runner':<18} {'epoch s':>8} {'vs plain':>9}  checksum")
    for batch in (int(b) for b in args.batch_sizes.split(",")):
        shard = -(-batch // args.shards_per_batch) if args.shards_per_batch else None
        cfg = TrainConfig(
            **{**base.to_dict(), "batch_size": batch, "hidden": base.hidden, "shard_size": shard}
        )
        # Every runner once per round, rounds repeated: a machine whose speed drifts (other
        # jobs, a busy host) then drifts under all of them alike; the best round of each counts.
        runners: dict[str, Callable[[], tuple[float, str]]] = {
            "plain loop": partial(plain_epoch, cfg, images, labels),
            "2 x half, no sync": partial(parallel_bound, cfg, False),
            "2 x half, barrier": partial(parallel_bound, cfg, True),
        }
        for protocol in args.protocols.split(","):
            for backend in args.backends.split(","):
                for workers in (int(w) for w in args.workers.split(",")):
                    run = TrainConfig(
                        **dict(cfg.to_dict(), hidden=cfg.hidden, backend=backend, workers=workers)
                    )
                    label = f"{workers} {backend}" + (" stepwise" if protocol == "stepwise" else "")
                    runners[label] = partial(trainer_epoch, run, dataset, protocol)
        results: dict[str, list[tuple[float, str]]] = {label: [] for label in runners}
        for _ in range(args.repeat):
            for label, runner in runners.items():
                results[label].append(runner())
        plain = min(s for s, _ in results["plain loop"])
        sums = set()
        for label, rows in results.items():
            seconds = min(s for s, _ in rows)
            note = "(bound)" if label.startswith("2 x half") else rows[0][1][:12]
            sums.update(c for _, c in rows if c)
            print(f"{batch:>5} {label:<18} {seconds:>8.3f}{plain / seconds:>8.2f}x  {note}")
        shards = len(shard_bounds(batch, cfg.effective_shard_size))
        print(f"{batch:>5} shard size {cfg.effective_shard_size} ({shards} a batch)")
        print(f"{batch:>5} checksums identical across runners: {len(sums) == 1}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
