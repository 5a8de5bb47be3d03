"""Ray workers against process workers on MNIST, in the same run, and where a Ray step's time goes.

Prints: Ray's start-up (local instance) apart from training; one epoch with 2 process workers
and with 2 Ray workers (best of --repeat, checksums compared); then the parts of one Ray step,
measured alone: the shard maths a worker does per step, ``ray.put`` of the parameters, an empty
ask round trip to a Ray actor, and a round trip whose reply carries a step's gradients.

    python benchmarks/ray_vs_process.py [--data-dir DIR] [--batch-size 64] [--repeat 2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import ray
from threadpoolctl import threadpool_limits

from otpnn.config import TrainConfig
from otpnn.data import load_dataset
from otpnn.logs import configure_logging
from otpnn.model import init_params, num_params, params_sha256, shard_gradient
from otpnn.schedule import shard_bounds, steps_per_epoch
from otpnn.training import JobOptions, TrainingJob
from supervision import Actor, spawn
from supervision.ray import RayOptions, connect

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"


class Echo(Actor):
    """A Ray actor that replies with what it is asked to (gradients, or nothing)."""

    ray_options = RayOptions(num_cpus=1)

    def on_receive(self, message: object) -> object:
        return message


def epoch(cfg: TrainConfig, dataset) -> tuple[float, str]:
    result = TrainingJob(cfg, dataset, JobOptions()).run()
    return result["history"][0]["seconds"], params_sha256(result["params"])


def median_ms(fn, n: int = 300) -> float:
    times = []
    for _ in range(n):
        start = time.perf_counter()
        fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times) * 1e3


def step_parts(cfg: TrainConfig, dataset, workers: int) -> dict[str, float]:
    """Milliseconds per step of each part of a Ray step, measured alone."""
    params = init_params(cfg)
    shards = shard_bounds(cfg.batch_size, cfg.effective_shard_size)
    per_worker = shards[: -(-len(shards) // workers)]
    grad = np.empty(num_params(cfg.layer_sizes), params.dtype)
    images, labels = dataset.train_images, dataset.train_labels

    def maths() -> None:
        for lo, hi in per_worker:
            shard_gradient(
                params, cfg.layer_sizes, cfg.activation, images[lo:hi], labels[lo:hi], grad
            )

    with threadpool_limits(1):
        compute = median_ms(maths)
    echo = spawn(Echo, kind="ray")
    try:
        reply = tuple(grad.copy() for _ in per_worker)
        parts = {
            "shard maths per worker": compute,
            "ray.put(params)": median_ms(lambda: ray.put(params)),
            "empty ask round trip": median_ms(lambda: echo.ask(None, timeout=10)),
            f"ask round trip, {len(reply)} gradients back": median_ms(
                lambda: echo.ask(reply, timeout=10)
            ),
        }
    finally:
        echo.stop(timeout=10)
    return parts


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("OTPNN_DATA_DIR", str(SHARED_MNIST)))
    ap.add_argument("--batch-size", type=int, default=64)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--repeat", type=int, default=2, help="Epochs per backend; the best is kept.")
    args = ap.parse_args()
    configure_logging(quiet=True)
    cfg = TrainConfig(dataset="mnist", data_dir=args.data_dir, epochs=1, batch_size=args.batch_size)
    dataset = load_dataset(cfg, download=False)
    steps = steps_per_epoch(len(dataset.train_labels), cfg.batch_size)
    print(f"MNIST, batch {cfg.batch_size}, {steps} steps/epoch, {os.cpu_count()} cores")

    connection = connect(num_cpus=args.workers)
    print(f"Ray start-up (local instance): {connection.startup_seconds:.2f} s")
    try:
        sums = set()
        for backend in ("process", "ray"):
            run = TrainConfig(**{**cfg.to_dict(), "hidden": cfg.hidden, "backend": backend,
                                 "workers": args.workers})  # fmt: skip
            results = [epoch(run, dataset) for _ in range(args.repeat)]
            best = min(s for s, _ in results)
            sums.update(c for _, c in results)
            print(
                f"{args.workers} {backend:<8} workers: epoch {best:.2f} s "
                f"({best / steps * 1e3:.2f} ms/step)  {results[0][1][:12]}"
            )
        print(f"checksums identical: {len(sums) == 1}")
        print("one Ray step, by part (median ms):")
        for name, ms in step_parts(cfg, dataset, args.workers).items():
            print(f"  {name:<32} {ms:7.3f}")
    finally:
        connection.close()
    return 0


if __name__ == "__main__":
    sys.exit(main())
