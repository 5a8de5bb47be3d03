"""Benchmark: what a synchronous step costs over its bound, part by part, in one run.

Run: ``python benchmarks/sync_step_parts.py [--hidden 128,64] [--batch 64] [--rounds 20]``

Each round times one epoch of MNIST on 2 processes, three ways, and prints the median over rounds
of each way's epoch as a ratio to the first (below 1: slower than the bound):

- ``bound``: the barrier-and-update bound of trainer_mnist.py: each process its half batch's
  gradient on private parameters, its half of the update (numpy, in place), a barrier a step;
- ``shared step``: otpnn's lockstep step without the actor system: parameters and momentum in
  shared memory, double-buffered by step parity, each rank's gradient row in shared memory, a
  barrier, each rank reducing both rows and updating its half through the compiled pass
  (``reduce_and_update``), a second barrier;
- ``otpnn``: ``TrainingJob`` with 2 process workers (the trainer itself; its epoch seconds).

The step from ``bound`` to ``shared step`` is what exchanging the step costs on this machine
(the other core's half of the parameters and of the gradient, the double buffers, the second
barrier); from ``shared step`` to ``otpnn``, what the actor protocol around it costs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from multiprocessing import get_context, shared_memory
from multiprocessing.queues import Queue
from multiprocessing.synchronize import Barrier

import numpy as np
from threadpoolctl import threadpool_limits
from trainer_mnist import SHARED_MNIST, parallel_bound, trainer_epoch

from otpnn.config import TrainConfig
from otpnn.data import load_dataset
from otpnn.logs import configure_logging
from otpnn.model import Hyper, init_params, layer_views, layers_gradient, reduce_and_update
from otpnn.schedule import batch_indices, epoch_permutation, steps_per_epoch
from otpnn.training.job import FORKSERVER_PRELOAD
from supervision.process import ensure_forkserver

_CELLS = 8  # int64 cells per rank's barrier row: a cache line each


def _barrier(cells: np.ndarray, rank: int, phase: int) -> None:
    """Publish ``phase`` in this rank's cell, then spin until the other rank has too."""
    cells[rank, 0] = phase
    while cells[1 - rank, 0] < phase:
        pass


def _shared_step_rank(
    cfg: TrainConfig, rank: int, segment: str, start: Barrier, out: Queue
) -> None:
    """One rank of the shared step: an epoch of it, timed from when both ranks are ready."""
    with threadpool_limits(1):
        data = load_dataset(cfg, download=False)
        images, labels, sizes = data.train_images, data.train_labels, cfg.layer_sizes
        n = init_params(cfg).size
        shm = shared_memory.SharedMemory(segment)
        cells = np.ndarray((2, _CELLS), np.int64, shm.buf, 0)
        params, velocity, grads = (
            np.ndarray((2, n), np.float32, shm.buf, 2 * _CELLS * 8 + k * 2 * n * 4)
            for k in range(3)
        )
        param_layers = [layer_views(row, sizes) for row in params]
        grad_layers = layer_views(grads[rank], sizes)
        lo, hi = rank * n // 2, (rank + 1) * n // 2
        hyper, half = Hyper(cfg.lr, cfg.momentum, cfg.weight_decay), cfg.batch_size // 2
        perm = epoch_permutation(len(labels), cfg.seed, 1)
        start.wait()
        begin = time.perf_counter()
        for step in range(steps_per_epoch(len(labels), cfg.batch_size)):
            rows = batch_indices(perm, step, cfg.batch_size)[rank * half : (rank + 1) * half]
            src, dst = step % 2, (step + 1) % 2
            layers_gradient(param_layers[src], grad_layers, cfg.activation, images[rows],
                            labels[rows])  # fmt: skip
            _barrier(cells, rank, 2 * step + 1)
            reduce_and_update(
                hyper, grads, params[src, lo:hi], velocity[src, lo:hi], cfg.batch_size,
                params_out=params[dst, lo:hi], velocity_out=velocity[dst, lo:hi], first=lo,
            )  # fmt: skip
            _barrier(cells, rank, 2 * step + 2)
        out.put(time.perf_counter() - begin)
        del cells, params, velocity, grads, param_layers, grad_layers  # before the close
        shm.close()


def shared_step_epoch(cfg: TrainConfig) -> float:
    """Seconds of the slower rank of a 2-rank shared-step epoch."""
    ctx = get_context("forkserver")  # its preload has compiled the update pass
    n = init_params(cfg).size
    shm = shared_memory.SharedMemory(create=True, size=2 * _CELLS * 8 + 3 * 2 * n * 4)
    try:
        np.ndarray((2, _CELLS), np.int64, shm.buf, 0)[:] = -1
        params = np.ndarray((2, n), np.float32, shm.buf, 2 * _CELLS * 8)
        params[0] = init_params(cfg)
        del params
        start, out = ctx.Barrier(2), ctx.Queue()
        ranks = [
            ctx.Process(target=_shared_step_rank, args=(cfg, r, shm.name, start, out))
            for r in range(2)
        ]
        for p in ranks:
            p.start()
        seconds = max(out.get(timeout=600) for _ in ranks)
        for p in ranks:
            p.join()
        return seconds
    finally:
        shm.close()
        shm.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--data-dir", default=os.environ.get("OTPNN_DATA_DIR", str(SHARED_MNIST)))
    ap.add_argument("--hidden", default="128,64")
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--rounds", type=int, default=20)
    args = ap.parse_args()
    configure_logging(quiet=True)
    ensure_forkserver(FORKSERVER_PRELOAD)
    hidden = tuple(int(h) for h in args.hidden.split(","))
    cfg = TrainConfig(dataset="mnist", data_dir=args.data_dir, epochs=1, workers=2,
                      backend="process", hidden=hidden, batch_size=args.batch)  # fmt: skip
    dataset = load_dataset(cfg, download=False)
    runners = {
        "bound": lambda: parallel_bound(cfg, synchronous=True, update=True)[0],
        "shared step": lambda: shared_step_epoch(cfg),
        "otpnn": lambda: trainer_epoch(cfg, dataset)[0],
    }
    seconds: dict[str, list[float]] = {name: [] for name in runners}
    for round_ in range(1, args.rounds + 1):
        for name, run in runners.items():
            seconds[name].append(run())
        print(f"round {round_}: " + "  ".join(f"{k} {v[-1]:.3f} s" for k, v in seconds.items()),
              flush=True)  # fmt: skip
    bound = seconds["bound"]
    for name, times in seconds.items():
        ratios = [b / t for b, t in zip(bound, times, strict=True)]
        print(f"{name:12s} median {statistics.median(times):.3f} s, bound / this: median "
              f"{statistics.median(ratios):.2f} ({min(ratios):.2f}-{max(ratios):.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
