"""Epoch time of otpnn's tree against the loop a user would write instead: a sweep, side by side.

For each network and batch size, one epoch of MNIST with:

- the plain loop: one process, the whole batch in one GEMM chain, the update as whole-vector
  numpy in place; with 1 BLAS thread (the reference every ratio is to) and with 2 (what a user
  gets by giving numpy a second core);
- three bound rows, what this machine allows right now: two processes running the plain loop's
  gradient maths on half a batch each at the same time, with no communication, then with a bare
  shared-memory barrier after every step (no update, no actors), then also each updating its
  half of the parameters before the barrier (a synchronous step with nothing exchanged);
- otpnn's trainer with 1, 2 and 4 process workers and 1 and 2 thread workers (default shard size
  unless ``--shard-size``);

all in one run, every runner once per round, the best of ``--repeat`` rounds counting (a machine
whose speed drifts then drifts under all of them alike), and beside it the median over rounds
of each round's own ratio (steadier where the speed changes within a round). Prints seconds
and ratios (> 1 is
faster than the 1-thread plain loop; the otpnn rows also as a ratio to the barrier bound and
to the barrier bound with the update),
checks that every otpnn run of a (network, batch) ends with the same checksum, measures the
proportional memory (PSS) of a whole job with 4 process workers on the widest network, writes
the table as JSON and draws speed-up against network width to a PNG.

    python benchmarks/trainer_mnist.py [--quick] [--data-dir DIR] [--networks 128x64,512x512]
        [--batch-sizes 64,256,1024] [--process-workers 1,2,4] [--thread-workers 1,2]
        [--repeat 2] [--shard-size S] [--out benchmarks/results/trainer_sweep]
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import sys
import threading
import time
from collections.abc import Callable
from functools import partial
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_limits

from otpnn.config import TrainConfig
from otpnn.data import Dataset, load_dataset
from otpnn.logs import configure_logging
from otpnn.model import SGD, init_params, params_sha256, shard_gradient
from otpnn.schedule import batch_indices, epoch_permutation, shard_bounds, steps_per_epoch
from otpnn.training import JobOptions, TrainingJob
from otpnn.training.job import FORKSERVER_PRELOAD
from supervision.process import ensure_forkserver

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
QUICK = {"networks": "128x64,512x512", "batch_sizes": "64,256", "process_workers": "1,2",
         "thread_workers": "", "repeat": 1}  # fmt: skip
PLAIN = "plain, 1 BLAS thread"
BARRIER = "2 x half, barrier"
UPDATE_BARRIER = "2 x half+update, barrier"


def plain_epoch(cfg: TrainConfig, dataset: Dataset, threads: int) -> tuple[float, str]:
    """One epoch of the loop a careful user writes: the whole batch in one forward/backward and
    the update as whole-vector numpy in place, without temporaries (:class:`otpnn.model.SGD`),
    with ``threads`` BLAS threads."""
    images, labels = dataset.train_images, dataset.train_labels
    params = init_params(cfg)
    grad = np.empty_like(params)
    opt = SGD(cfg.lr, cfg.momentum, cfg.weight_decay)
    perm = epoch_permutation(len(labels), cfg.seed, 1)
    with threadpool_limits(threads):
        start = time.perf_counter()
        for step in range(steps_per_epoch(len(labels), cfg.batch_size)):
            idx = batch_indices(perm, step, cfg.batch_size)
            shard_gradient(params, cfg.layer_sizes, cfg.activation, images[idx], labels[idx], grad)
            opt.step(params, grad, len(idx))
        return time.perf_counter() - start, ""


def _child_loop_state(cfg: TrainConfig) -> tuple:
    """What a bound's child loop starts from: (images, labels, params, a gradient buffer, the
    optimizer, epoch 1's order), with the dataset loaded in the child."""
    data = load_dataset(cfg, download=False)
    params = init_params(cfg)
    opt = SGD(cfg.lr, cfg.momentum, cfg.weight_decay)
    perm = epoch_permutation(len(data.train_labels), cfg.seed, 1)
    return data.train_images, data.train_labels, params, np.empty_like(params), opt, perm


def _half_batch_loop(
    cfg: TrainConfig, rows: int, start, seconds, steps_done, rank: tuple[int, int], update: bool
) -> None:
    """In a child: the gradient maths of one epoch on ``rows`` samples a step, timed from
    when every child is ready; with ``steps_done`` (a shared array, one cell per child), each
    step also waits until every child has finished it; with ``update``, each child also
    updates its own share of the parameters after its gradient (as a synchronous worker must,
    but with nothing exchanged)."""
    with threadpool_limits(1):
        images, labels, params, grad, opt, perm = _child_loop_state(cfg)
        me, of = rank
        share = slice(me * len(params) // of, (me + 1) * len(params) // of)
        start.wait()
        begin = time.perf_counter()
        for step in range(steps_per_epoch(len(labels), cfg.batch_size)):
            idx = batch_indices(perm, step, cfg.batch_size)[:rows]
            shard_gradient(params, cfg.layer_sizes, cfg.activation, images[idx], labels[idx], grad)
            if update:
                opt.step(params[share], grad[share], cfg.batch_size)
            if steps_done is not None:
                steps_done[me] = step + 1
                while min(steps_done) <= step:
                    pass
        seconds.put(time.perf_counter() - begin)


def _half_epoch_loop(cfg: TrainConfig, start, seconds, rank: tuple[int, int]) -> None:
    """In a child: the plain loop (whole batches, the whole update) on every ``of``-th batch of
    an epoch from batch ``me``, timed from when every child is ready: a local-SGD worker that
    never averages, so with nothing exchanged."""
    with threadpool_limits(1):
        images, labels, params, grad, opt, perm = _child_loop_state(cfg)
        me, of = rank
        start.wait()
        begin = time.perf_counter()
        for step in range(me, steps_per_epoch(len(labels), cfg.batch_size), of):
            idx = batch_indices(perm, step, cfg.batch_size)
            shard_gradient(params, cfg.layer_sizes, cfg.activation, images[idx], labels[idx], grad)
            opt.step(params, grad, len(idx))
        seconds.put(time.perf_counter() - begin)


def _slowest_child(processes: int, target, args) -> float:
    """Seconds of the slowest of ``processes`` children ``target(*args(start, seconds, i))``
    started at once (each times itself from a shared barrier)."""
    ctx = multiprocessing.get_context("forkserver")
    start, seconds = ctx.Barrier(processes), ctx.Queue()
    children = [ctx.Process(target=target, args=args(start, seconds, i)) for i in range(processes)]
    for child in children:
        child.start()
    times = [seconds.get(timeout=600) for _ in children]
    for child in children:
        child.join()
    return max(times)


def parallel_bound(
    cfg: TrainConfig, synchronous: bool, update: bool = False, processes: int = 2
) -> tuple[float, str]:
    """Seconds of the slowest of ``processes`` loops on a share of the batch run at once."""
    steps_done = (
        multiprocessing.get_context("forkserver").Array("q", processes, lock=False)
        if synchronous
        else None
    )
    rows = -(-cfg.batch_size // processes)
    seconds = _slowest_child(
        processes,
        _half_batch_loop,
        lambda start, out, i: (cfg, rows, start, out, steps_done, (i, processes), update),
    )
    return seconds, ""


def half_epoch_bound(cfg: TrainConfig, processes: int = 2) -> float:
    """Seconds of the slowest of ``processes`` plain loops on every ``processes``-th batch of
    an epoch, run at once: what workers that train replicas without ever exchanging anything
    (local SGD with no averages) take; the no-communication bound of benchmarks/algorithms.py."""
    return _slowest_child(
        processes, _half_epoch_loop, lambda start, out, i: (cfg, start, out, (i, processes))
    )


def trainer_epoch(cfg: TrainConfig, dataset: Dataset) -> tuple[float, str]:
    result = TrainingJob(cfg, dataset, JobOptions()).run()
    return result["history"][0]["seconds"], params_sha256(result["params"])


def _pss_bytes(pid: int) -> int:
    try:
        text = Path(f"/proc/{pid}/smaps_rollup").read_text()
    except OSError:  # gone, or not ours to read
        return 0
    return next(
        int(line.split()[1]) * 1024 for line in text.splitlines() if line.startswith("Pss:")
    )


def _descendants(root: int) -> list[int]:
    """The processes below ``root`` (its workers come from its forkserver): another job's
    workers on the machine are not this run's."""
    parents: dict[int, int] = {}
    for entry in Path("/proc").iterdir():
        if entry.name.isdigit():
            try:  # the field after "(comm)" is the parent's pid
                parents[int(entry.name)] = int(
                    (entry / "stat").read_text().rsplit(")", 1)[1].split()[1]
                )
            except (OSError, IndexError, ValueError):
                continue
    found, frontier = [], [root]
    while frontier:
        children = [pid for pid, ppid in parents.items() if ppid in frontier]
        found += children
        frontier = children
    return found


def peak_job_memory(cfg: TrainConfig, dataset: Dataset) -> int:
    """Peak proportional set size (shared pages counted once, split among their sharers) of
    this process and every process below it (forkserver, workers) while ``cfg`` trains an
    epoch."""
    peak, done = 0, threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.2):
            pids = [os.getpid(), *_descendants(os.getpid())]
            peak = max(peak, sum(_pss_bytes(pid) for pid in pids))

    sampler = threading.Thread(target=sample)
    sampler.start()
    try:
        trainer_epoch(cfg, dataset)
    finally:
        done.set()
        sampler.join()
    return peak


def _network(text: str) -> tuple[int, ...]:
    return tuple(int(width) for width in text.split("x"))


def _ints(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def sweep_one(cfg: TrainConfig, dataset: Dataset, args: argparse.Namespace) -> dict:
    """Every runner of one (network, batch), ``args.repeat`` rounds: the best round's seconds,
    and the median over rounds of each round's ratios."""
    runners: dict[str, Callable[[], tuple[float, str]]] = {
        PLAIN: partial(plain_epoch, cfg, dataset, 1),
        "plain, 2 BLAS threads": partial(plain_epoch, cfg, dataset, 2),
        "2 x half, no sync": partial(parallel_bound, cfg, False),
        BARRIER: partial(parallel_bound, cfg, True),
        UPDATE_BARRIER: partial(parallel_bound, cfg, True, True),
    }
    kinds = [("process", w) for w in _ints(args.process_workers)]
    kinds += [("thread", w) for w in _ints(args.thread_workers)]
    for backend, workers in kinds:
        run = TrainConfig(
            **dict(cfg.to_dict(), hidden=cfg.hidden, backend=backend, workers=workers)
        )
        runners[f"otpnn {workers} {backend}"] = partial(trainer_epoch, run, dataset)
    results: dict[str, list[tuple[float, str]]] = {label: [] for label in runners}
    for _ in range(args.repeat):
        for label, runner in runners.items():
            results[label].append(runner())
    seconds = {label: min(s for s, _ in rows) for label, rows in results.items()}
    rounds = [{label: rows[i][0] for label, rows in results.items()} for i in range(args.repeat)]
    sums = {c for rows in results.values() for _, c in rows if c}
    return {
        "network": "x".join(map(str, cfg.hidden)),
        "batch": cfg.batch_size,
        "shard_size": cfg.effective_shard_size,
        "shards": len(shard_bounds(cfg.batch_size, cfg.effective_shard_size)),
        "seconds": seconds,
        # Each round's ratio, then the median over rounds: steadier than the best rounds'
        # ratio where the machine's speed changes between runners of one round.
        "paired_speedup": {label: _median_ratio(rounds, PLAIN, label) for label in results},
        "paired_vs_update_bound": {
            label: _median_ratio(rounds, UPDATE_BARRIER, label) for label in results
        },
        "checksums_identical": len(sums) == 1,
        "checksum": sorted(sums)[0] if len(sums) == 1 else None,
    }


def _median_ratio(rounds: list[dict[str, float]], base: str, label: str) -> float:
    return statistics.median(r[base] / r[label] for r in rounds)


def print_rows(row: dict) -> None:
    seconds = row["seconds"]
    plain, bound = seconds[PLAIN], seconds[BARRIER]
    with_update = seconds[UPDATE_BARRIER]
    head = f"{row['network']:>9} {row['batch']:>5}"
    for label, s in seconds.items():
        vs = (
            f"{bound / s:>6.2f}x bound {with_update / s:>5.2f}x +update"
            if label.startswith("otpnn")
            else ""
        )
        paired = f"median of rounds {row['paired_speedup'][label]:>5.2f}x"
        if label.startswith("otpnn"):
            paired += f" {row['paired_vs_update_bound'][label]:>5.2f}x +update"
        print(f"{head} {label:<24} {s:>8.3f} s {plain / s:>6.2f}x {vs} | {paired}", flush=True)
    same = "identical" if row["checksums_identical"] else "DIFFER"
    print(f"{head} shard size {row['shard_size']} ({row['shards']} a batch); checksums {same}")


def plot(rows: list[dict], path: Path) -> None:
    """Speed-up over the 1-thread plain loop against network width, one panel per batch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    batches = sorted({r["batch"] for r in rows})
    fig, axes = plt.subplots(1, len(batches), figsize=(5 * len(batches), 4), squeeze=False)
    for ax, batch in zip(axes[0], batches, strict=True):
        mine = [r for r in rows if r["batch"] == batch]
        names = [r["network"] for r in mine]
        for label in mine[0]["seconds"]:
            if label == PLAIN:
                continue
            ratios = [r["seconds"][PLAIN] / r["seconds"][label] for r in mine]
            style = "--" if label.startswith(("plain", "2 x")) else "-o"
            ax.plot(names, ratios, style, label=label)
        ax.axhline(1.0, color="grey", linewidth=0.8)
        ax.set(title=f"batch {batch}", xlabel="hidden layers", ylabel="speed-up vs plain loop")
    axes[0][-1].legend(fontsize=7)
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("OTPNN_DATA_DIR", str(SHARED_MNIST)))
    ap.add_argument("--quick", action="store_true", help="A two-minute subset: " + str(QUICK))
    ap.add_argument("--networks", default="128x64,512x512,1024x1024")
    ap.add_argument("--batch-sizes", default="64,256,1024")
    ap.add_argument("--process-workers", default="1,2,4")
    ap.add_argument("--thread-workers", default="1,2")
    ap.add_argument("--repeat", type=int, default=2, help="Rounds; each runner's best counts.")
    ap.add_argument("--shard-size", type=int, default=None, help="Default: the config's.")
    ap.add_argument("--out", default="benchmarks/results/trainer_sweep", help="JSON and PNG path")
    args = ap.parse_args()
    if args.quick:
        for key, value in QUICK.items():
            setattr(args, key, value)
    configure_logging(quiet=True)
    ensure_forkserver(FORKSERVER_PRELOAD)  # warm worker processes, as `otpnn train` has them

    base = TrainConfig(dataset="mnist", data_dir=args.data_dir, epochs=1, lr=0.1)
    dataset = load_dataset(base, download=False)
    print(f"MNIST {len(dataset.train_labels)} samples, {os.cpu_count()} cores; one epoch each")
    rows = []
    for network in (_network(n) for n in args.networks.split(",")):
        for batch in _ints(args.batch_sizes):
            fields = dict(base.to_dict(), hidden=network, batch_size=batch)
            cfg = TrainConfig(**dict(fields, shard_size=args.shard_size))
            rows.append(sweep_one(cfg, dataset, args))
            print_rows(rows[-1])
    widest = max(rows, key=lambda r: _network(r["network"]))
    if "4" in args.process_workers.split(","):
        fields = dict(base.to_dict(), hidden=_network(widest["network"]), batch_size=256)
        cfg = TrainConfig(**dict(fields, workers=4, shard_size=args.shard_size))
        pss = peak_job_memory(cfg, dataset)
        print(f"peak PSS, 4 process workers, {widest['network']}, batch 256: {pss / 2**30:.2f} GiB")
        rows.append({"network": widest["network"], "peak_pss_bytes_4_process_workers": pss})
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.with_suffix(".json").write_text(json.dumps(rows, indent=1))
    plot([r for r in rows if "seconds" in r], out.with_suffix(".png"))
    print(f"wrote {out.with_suffix('.json')} and {out.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
