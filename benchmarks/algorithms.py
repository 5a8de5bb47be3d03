"""Sync SGD against local SGD and async SGD on MNIST, in one run: test accuracy against
wall-clock training seconds, epoch seconds as ratios to the plain single-process loop and to the
no-communication bound measured in the same run, and what an epoch exchanges.

Runners (MNIST, the default network and batch, ``--workers`` process workers, ``--epochs``
epochs; every otpnn run at its algorithm's default momentum and warm-up, see
``otpnn.config.algorithm_defaults``, unless ``--momentum`` / ``--lr-warmup-steps`` are given):

- ``plain loop``: one process, the whole batch in one GEMM chain, the update as whole-vector
  numpy in place, at sync's defaults (schedule included); the test set is evaluated after each
  epoch, outside the timing;
- ``no-comm bound``: ``--workers`` processes each running the plain loop (gradient and update)
  on every ``workers``-th batch of an epoch, at once: local SGD that never averages, so with
  nothing exchanged at all (``trainer_mnist.half_epoch_bound``); one epoch, no accuracy,
  measured before and after the otpnn runs, the faster kept (a noisy machine flatters no one);
- ``half-batch maths``: the sync bound of benchmarks/trainer_mnist.py, for comparison: each
  process only the gradient maths of a share of every batch (no update);
- ``sync``, ``local-sgd H=..`` (``--sync-every``), ``async S=..`` (``--staleness``): otpnn
  jobs; their per-epoch history gives the curves (``seconds``: the training loop only).
  Sync SGD waits for every worker at every step; local SGD only at every average (every
  ``workers x H`` batches); async SGD combines the workers' gradients at every update, but a
  worker waits only when it is S updates ahead;
- with ``--ray``: sync and local-sgd H=16 on Ray workers (a local Ray, ``--ray-epochs``
  epochs), and the ratio of their epoch seconds (the issue's target: local-sgd at least 5x).

Table columns:

- ``epoch s``: mean training seconds of an epoch (evaluation excluded);
- ``vs plain``, ``vs bound``: the plain loop's and the bound's epoch seconds divided by this
  runner's (above 1: faster than it);
- ``test acc``: test accuracy after the last epoch;
- ``exch/epoch``: the times the workers' results are combined in an epoch (its last), from the
  config alone (sync: every step; local-sgd: every average; async: every update);
- ``MB/epoch``: parameter-sized vectors that cross between a worker and the shared state or the
  coordinator (shared memory, or Ray's object store), in an epoch, for the protocol that ran:
  sync, per step, the parameters read by each worker and one gradient row per micro-shard
  written; async lockstep, per update, the version its owner reads (its gradient rows stay in
  its own memory); async stepwise (Ray's), per update, the version read by each message
  (``min(shards, ceil(workers / S))`` of them) and one gradient row per shard; local-sgd, per
  round, the parameters and momentum read and the replica's written back by each active rank.
  (The in-place reduction and update of the lockstep protocols, which re-read and rewrite the
  parameters in shared memory, are not counted.)

Writes ``--out``.json (every runner's rows and per-epoch history) and ``--out``.png (test
accuracy against cumulative training seconds).

    python benchmarks/algorithms.py [--quick] [--data-dir DIR] [--epochs 10] [--workers 2]
        [--sync-every 4,16] [--warmup-steps 0] [--staleness 1,2,4] [--momentum M]
        [--lr-warmup-steps N] [--train N] [--ray] [--ray-epochs 2]
        [--out benchmarks/results/algorithms] [--pairs N]

``--pairs N`` runs only issue 18's targets as paired repetitions (see :func:`paired_targets`).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import os
import statistics
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np
from threadpoolctl import threadpool_limits
from trainer_mnist import SHARED_MNIST, half_epoch_bound, parallel_bound

from otpnn.config import TrainConfig
from otpnn.data import Dataset, load_dataset
from otpnn.interchange import limit_dataset
from otpnn.local_sgd import RoundSchedule
from otpnn.logs import configure_logging
from otpnn.lr_schedule import LrSchedule
from otpnn.model import SGD, evaluate, init_params, num_params, shard_gradient
from otpnn.schedule import Batches, batch_indices, epoch_permutation, steps_per_epoch
from otpnn.training import JobOptions, TrainingJob, resolve
from otpnn.training.job import FORKSERVER_PRELOAD
from supervision.process import ensure_forkserver

QUICK = {"epochs": 2, "train": 12_800, "ray_epochs": 1}  # a two-minute check, not for numbers
PLAIN = "plain loop"
BOUND = "no-comm bound"
HALF_BATCH = "half-batch maths"


def exchanges_per_epoch(cfg: TrainConfig, n_train: int) -> tuple[int, int]:
    """(exchanges, bytes moved) in the last epoch, counted as the module says, for the
    protocol ``cfg`` runs with by default."""
    per_epoch = steps_per_epoch(n_train, cfg.batch_size)
    vector = num_params(cfg.layer_sizes) * np.dtype(cfg.dtype).itemsize
    workers = cfg.workers or 1
    batches = Batches(n_train, cfg.batch_size, cfg.effective_shard_size, per_epoch)
    steps = range((cfg.epochs - 1) * per_epoch + 1, cfg.epochs * per_epoch + 1)
    shards = [len(batches.shards(t)[1]) for t in steps]
    if cfg.algorithm == "sync":
        return per_epoch, sum(min(workers, k) + k for k in shards) * vector
    if cfg.algorithm == "async" and resolve(cfg, JobOptions()).protocol == "async-lockstep":
        return per_epoch, per_epoch * vector
    if cfg.algorithm == "async":
        runs = [min(k, math.ceil(workers / cfg.staleness)) for k in shards]
        return per_epoch, sum(r + k for r, k in zip(runs, shards, strict=True)) * vector
    rounds = list(RoundSchedule.of(cfg, per_epoch).rounds(steps[0], steps[-1]))
    return len(rounds), sum(4 * len(r.shares) for r in rounds) * vector


def plain_history(cfg: TrainConfig, dataset: Dataset) -> list[dict[str, float]]:
    """The plain loop (one BLAS thread, as each worker has) for ``cfg.epochs`` epochs at
    ``cfg``'s learning-rate schedule: per epoch its training seconds and the test accuracy
    after it (evaluated outside the timing)."""
    images, labels = dataset.train_images, dataset.train_labels
    n = len(labels)
    per_epoch = steps_per_epoch(n, cfg.batch_size)
    schedule = LrSchedule.of(cfg, per_epoch)
    params = init_params(cfg)
    grad = np.empty_like(params)
    opt = SGD(cfg.lr, cfg.momentum, cfg.weight_decay)
    history = []
    with threadpool_limits(1):
        for epoch in range(1, cfg.epochs + 1):
            perm = epoch_permutation(n, cfg.seed, epoch)
            start = time.perf_counter()
            for step in range(per_epoch):
                idx = batch_indices(perm, step, cfg.batch_size)
                opt.hyper = schedule.hyper((epoch - 1) * per_epoch + step + 1)
                shard_gradient(params, cfg.layer_sizes, cfg.activation, images[idx],
                               labels[idx], grad)  # fmt: skip
                opt.step(params, grad, len(idx))
            seconds = time.perf_counter() - start
            _, accuracy = evaluate(params, cfg.layer_sizes, cfg.activation,
                                   dataset.test_images, dataset.test_labels)  # fmt: skip
            history.append({"epoch": epoch, "seconds": seconds, "test_accuracy": accuracy})
    return history


def job_history(cfg: TrainConfig, dataset: Dataset) -> list[dict[str, float]]:
    """An otpnn job's per-epoch (epoch, training seconds, test accuracy)."""
    rows = TrainingJob(cfg, dataset).run()["history"]
    return [{k: row[k] for k in ("epoch", "seconds", "test_accuracy")} for row in rows]


def variant(args: argparse.Namespace, base: TrainConfig, **changes: Any) -> TrainConfig:
    """``base`` with ``changes``, at the algorithm's default momentum and warm-up unless the
    command line gave them."""
    overrides = {"momentum": args.momentum, "lr_warmup_steps": args.lr_warmup_steps}
    return TrainConfig(**{**base.to_dict(), **overrides, **changes})


def runs(args: argparse.Namespace, base: TrainConfig) -> dict[str, TrainConfig]:
    """The otpnn runners: sync, local SGD for each H, async SGD for each S."""
    out = {"sync": variant(args, base)}
    for h in _ints(args.sync_every):
        out[f"local-sgd H={h}"] = variant(
            args, base, algorithm="local-sgd", sync_every=h, warmup_steps=args.warmup_steps
        )
    for s in _ints(args.staleness):
        out[f"async S={s}"] = variant(args, base, algorithm="async", staleness=s)
    return out


def row(label: str, history: list[dict], cfg: TrainConfig | None, n: int) -> dict[str, Any]:
    """A runner's JSON row: its history (with cumulative seconds), mean epoch seconds, last
    accuracy, and for otpnn runners the config that ran and the exchanges."""
    total = 0.0
    for epoch in history:
        total += epoch["seconds"]
        epoch["cumulative_seconds"] = total
    out: dict[str, Any] = {
        "runner": label,
        "epoch_seconds": total / len(history),
        "test_accuracy": history[-1].get("test_accuracy"),
        "history": history,
    }
    if cfg is not None:
        exchanges, moved = exchanges_per_epoch(cfg, n)
        out |= {"config": cfg.to_record(), "exchanges_per_epoch": exchanges,
                "bytes_per_epoch": moved}  # fmt: skip
    return out


def print_table(rows: list[dict], plain: float, bound: float) -> None:
    print(f"{'runner':<24} {'epoch s':>8} {'vs plain':>9} {'vs bound':>9} {'test acc':>9} "
          f"{'exch/epoch':>11} {'MB/epoch':>9}")  # fmt: skip
    for r in rows:
        s = r["epoch_seconds"]
        acc = "" if r["test_accuracy"] is None else f"{r['test_accuracy']:.4f}"
        line = f"{r['runner']:<24} {s:>8.3f} {plain / s:>8.2f}x {bound / s:>8.2f}x {acc:>9}"
        if "exchanges_per_epoch" in r:
            line += f" {r['exchanges_per_epoch']:>11} {r['bytes_per_epoch'] / 1e6:>9.1f}"
        print(line, flush=True)


def plot(rows: list[dict], path: Path, title: str) -> None:
    """Test accuracy against cumulative training seconds, one line per runner (a point per
    epoch; Ray runners dashed)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(8, 5))
    for r in rows:
        if r["test_accuracy"] is None:
            continue
        x = [e["cumulative_seconds"] for e in r["history"]]
        y = [100 * e["test_accuracy"] for e in r["history"]]
        style = "--s" if r["runner"].startswith("ray") else "-o"
        if r["runner"] == PLAIN:
            style = "k-o"
        ax.plot(x, y, style, label=r["runner"], markersize=4)
    ax.set(title=title, xlabel="training seconds (evaluation excluded)",
           ylabel="test accuracy (%)")  # fmt: skip
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def ray_rows(args: argparse.Namespace, base: TrainConfig, dataset: Dataset) -> list[dict]:
    """Sync and local-sgd H=16 on Ray workers (a local Ray started by each job); prints the
    ratio of their epoch seconds."""
    on_ray = {"backend": "ray", "epochs": args.ray_epochs}
    configs = {
        "ray sync": variant(args, base, **on_ray),
        "ray local-sgd H=16": variant(args, base, **on_ray, algorithm="local-sgd", sync_every=16),
    }
    n = len(dataset.train_labels)
    out = [row(label, job_history(cfg, dataset), cfg, n) for label, cfg in configs.items()]
    ratio = out[0]["epoch_seconds"] / out[1]["epoch_seconds"]
    print(f"Ray, {args.workers} workers, {args.ray_epochs} epochs: local-sgd H=16 is {ratio:.2f}x "
          "faster per epoch than sync (target: >= 5x)")  # fmt: skip
    return out


def paired_targets(args: argparse.Namespace, base: TrainConfig, dataset: Dataset) -> None:
    """Issue 18's targets, steadier than one long run on a drifting machine: ``--pairs`` times,
    the no-communication bound (measured twice, averaged), then local-sgd H=8, async S=2 and
    sync for 3 epochs each (the mean of epochs 2-3: past start-up), each as a ratio to that
    repetition's bound; prints every repetition and the median ratios."""
    one_epoch = dataclasses.replace(base, epochs=1)
    three = dataclasses.replace(base, epochs=3)
    runners = {
        "local-sgd H=8": variant(args, three, algorithm="local-sgd", sync_every=8),
        "async S=2": variant(args, three, algorithm="async", staleness=2),
        "sync": variant(args, three),
    }
    ratios: dict[str, list[float]] = {label: [] for label in runners}
    scale = len(dataset.train_labels) / 60000  # the bound's children train on the whole set
    for rep in range(args.pairs):
        bound = scale * sum(half_epoch_bound(one_epoch, args.workers) for _ in range(2)) / 2
        line = f"pair {rep + 1}: bound {bound:.3f} s"
        for label, cfg in runners.items():
            seconds = [e["seconds"] for e in job_history(cfg, dataset)[1:]]
            ratio = bound / (sum(seconds) / len(seconds))
            ratios[label].append(ratio)
            line += f" | {label} {ratio:.2f}x"
        print(line, flush=True)
    for label, values in ratios.items():
        print(f"{label}: median {statistics.median(values):.2f}x the bound "
              f"({min(values):.2f}-{max(values):.2f}x; target for local-sgd H=8 and async S=2: "
              ">= 0.85x)")  # fmt: skip


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--quick", action="store_true", help="A two-minute check: " + str(QUICK))
    ap.add_argument("--data-dir", default=os.environ.get("OTPNN_DATA_DIR", str(SHARED_MNIST)))
    ap.add_argument("--epochs", type=int, default=10)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--sync-every", default="4,16", help="H values for local-sgd, comma-separated")
    ap.add_argument("--warmup-steps", type=int, default=0, help="local-sgd's synchronous steps")
    ap.add_argument("--staleness", default="1,2,4", help="S values for async, comma-separated")
    ap.add_argument("--momentum", type=float, default=None, help="Default: each algorithm's")
    ap.add_argument("--lr-warmup-steps", type=int, default=None, help="Default: each algorithm's")
    ap.add_argument("--train", type=int, default=0, help="Use the first N training images (0: all)")
    ap.add_argument("--ray", action="store_true", help="Also sync vs local-sgd H=16 on Ray")
    ap.add_argument("--ray-epochs", type=int, default=2)
    ap.add_argument("--out", default="benchmarks/results/algorithms", help="JSON and PNG path")
    ap.add_argument("--pairs", type=int, default=0, help="Only the paired target runs, N times")
    args = ap.parse_args()
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    configure_logging(quiet=True)
    ensure_forkserver(FORKSERVER_PRELOAD)  # warm worker processes, as `otpnn train` has them

    base = TrainConfig(dataset="mnist", data_dir=str(Path(args.data_dir)), epochs=args.epochs,
                       workers=args.workers, backend="process")  # fmt: skip
    dataset = load_dataset(base, download=False)
    if args.train:
        dataset = limit_dataset(dataset, args.train, len(dataset.test_labels))
    n = len(dataset.train_labels)
    if args.pairs:
        paired_targets(args, base, dataset)
        return 0
    print(f"MNIST {n} samples, {args.epochs} epochs, {args.workers} process workers, "
          f"{os.cpu_count()} cores; epoch seconds: the mean over epochs", flush=True)  # fmt: skip

    rows = [row(PLAIN, plain_history(base, dataset), None, n)]
    one_epoch = dataclasses.replace(base, epochs=1)
    bound = half_epoch_bound(one_epoch, args.workers)
    maths, _ = parallel_bound(one_epoch, False, processes=args.workers)
    for label, cfg in runs(args, base).items():
        rows.append(row(label, job_history(cfg, dataset), cfg, n))
    bound = min(bound, half_epoch_bound(one_epoch, args.workers))
    if args.train:  # the bounds' children train on the whole set: scaled to the subset
        bound, maths = bound * n / 60000, maths * n / 60000
        print("(--train: the bounds are scaled from the whole set: approximate)")
    rows[1:1] = [row(BOUND, [{"epoch": 1, "seconds": bound}], None, n),
                 row(HALF_BATCH, [{"epoch": 1, "seconds": maths}], None, n)]  # fmt: skip
    print_table(rows, rows[0]["epoch_seconds"], bound)
    if args.ray:
        extra = ray_rows(args, base, dataset)
        print_table(extra, rows[0]["epoch_seconds"], bound)
        rows += extra

    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    meta = {"samples": n, "epochs": args.epochs, "workers": args.workers,
            "cores": os.cpu_count(), "quick": args.quick}  # fmt: skip
    out.with_suffix(".json").write_text(json.dumps({**meta, "rows": rows}, indent=1))
    title = f"MNIST {n} samples, {args.workers} workers, {args.epochs} epochs"
    plot(rows, out.with_suffix(".png"), title)
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
