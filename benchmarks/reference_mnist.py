"""Benchmark the serial reference on real MNIST: accuracy per epoch and epoch time, 1 BLAS thread.

    python benchmarks/reference_mnist.py [--data-dir DIR] [--epochs 5] [--shard-size 32] [--json F]

Epoch seconds cover the training loop only (not the test evaluation). BLAS is pinned to one
thread (threadpoolctl), as inside each worker of the actor trainer, so this is the per-core
baseline the parallel trainer is compared against.
"""

from __future__ import annotations

import json
import os
import platform
import sys
import time

import click
import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

from otpnn.config import TrainConfig, algorithm_defaults
from otpnn.data import DataError, load_dataset
from otpnn.reference import train_reference


@click.command()
@click.option("--data-dir", default=None, help="MNIST directory (default: the usual search).")
@click.option("--epochs", default=5, show_default=True)
@click.option("--batch-size", default=TrainConfig.batch_size, show_default=True)
@click.option(
    "--shard-size",
    default=None,
    type=int,
    help="Default: a shard per core (2 or more), >= 32 rows.",
)
@click.option("--lr", default=TrainConfig.lr, show_default=True)
@click.option("--momentum", default=algorithm_defaults("sync", 1)["momentum"], show_default=True)
@click.option("--seed", default=0, show_default=True)
@click.option("--json", "json_path", default=None, help="Also write the results here.")
def main(data_dir, epochs, batch_size, shard_size, lr, momentum, seed, json_path) -> None:
    cfg = TrainConfig(
        data_dir=data_dir, epochs=epochs, batch_size=batch_size, shard_size=shard_size, lr=lr,
        momentum=momentum,
        seed=seed,
    )  # fmt: skip
    try:
        dataset = load_dataset(cfg, download=False)
    except DataError as e:
        sys.exit(f"error: {e}")
    with threadpool_limits(1):
        blas = [
            f"{i['internal_api']} {i['version']} x{i['num_threads']}" for i in threadpool_info()
        ]
        click.echo(f"{dataset.name}, config {cfg.to_dict()}, BLAS {blas}")
        click.echo(f"{'epoch':>5} {'seconds':>8} {'samples/s':>10} {'train loss':>10} "
                   f"{'train acc':>9} {'test acc':>8}")  # fmt: skip
        start = time.perf_counter()
        result = train_reference(cfg, dataset, on_epoch=_print_row)
        total = time.perf_counter() - start
    click.echo(f"total {total:.2f} s, params sha256 {result.params_sha256}")
    if json_path:
        report = {
            "config": cfg.to_dict(),
            "environment": {
                "python": platform.python_version(),
                "numpy": np.__version__,
                "blas": blas,
                "cores": os.cpu_count(),
            },
            "epochs": result.history,
            "params_sha256": result.params_sha256,
        }
        with open(json_path, "w") as f:
            json.dump(report, f, indent=2)


def _print_row(row: dict) -> None:
    click.echo(
        f"{row['epoch']:>5} {row['seconds']:>8.2f} {row['samples_per_second']:>10.0f} "
        f"{row['train_loss']:>10.4f} {row['train_accuracy']:>9.4f} {row['test_accuracy']:>8.4f}"
    )


if __name__ == "__main__":
    main()
