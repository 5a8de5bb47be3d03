"""Benchmark: how fast two cores of this machine are when both are busy, and whether sharing the
parameters in memory costs anything. The instrument behind "the machine" in benchmarks/README.

Run: ``python benchmarks/cores_side_by_side.py [--rounds N] [--steps N] [--rows R] [--hidden H]``

Each round times one shard's gradient (the workers' ``layers_gradient``, default network, 32
rows: a 2-worker step's share at batch 64) in one process alone, then in two processes at once
that meet at a shared-memory barrier after every step, as synchronous SGD's ranks do, with the
parameters each process reads:

- ``private``: its own copy, which it updates itself (the bound rows of trainer_mnist.py);
- ``shared``: one copy in shared memory, each process writing its half after every step, so the
  other reads lines a core just wrote (what otpnn's lockstep ranks do);
- ``read-only``: one shared copy nobody writes.

It prints each process's milliseconds per gradient and the slower over the faster. A synchronous
step waits for the slower process: where the two differ, an equal split of the work is capped by
the slower core, whatever the protocol.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from multiprocessing import get_context, shared_memory
from multiprocessing.queues import Queue

os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")  # before numpy loads: one BLAS thread each

import numpy as np

from otpnn.model import init_params, layer_views, layers_gradient, num_params

MODES = ("private", "shared", "read-only")
_HEADER = 64  # bytes of barrier cells before the parameters in the segment


def _gradients(
    rank: int,
    ranks: int,
    segment: str,
    mode: str,
    sizes: tuple[int, ...],
    args: argparse.Namespace,
    out: Queue,
) -> None:
    """One process: ``args.steps`` gradients, a barrier after each; puts (rank, ms/gradient)."""
    shm = shared_memory.SharedMemory(segment)
    n = num_params(sizes)
    cells = np.ndarray((ranks,), np.int64, shm.buf, 0)
    shared = np.ndarray((n,), np.float32, shm.buf, _HEADER)
    params = shared.copy() if mode == "private" else shared
    grad = np.empty(n, np.float32)
    views, grads = layer_views(params, sizes), layer_views(grad, sizes)
    rng = np.random.default_rng(rank)
    x = rng.integers(0, 256, (args.rows, sizes[0]), dtype=np.uint8)
    y = rng.integers(0, sizes[-1], args.rows)
    mine = slice(rank * n // ranks, (rank + 1) * n // ranks)
    spent = 0.0
    for t in range(1, args.steps + 1):
        start = time.perf_counter()
        layers_gradient(views, grads, "relu", x, y)
        spent += time.perf_counter() - start
        if mode != "read-only":
            params[mine] -= np.float32(1e-9) * grad[mine]
        cells[rank] = t
        while cells.min() < t:
            pass
    out.put((rank, spent / args.steps * 1e3))
    del cells, shared, params, views
    shm.close()


def side_by_side(
    ranks: int, mode: str, sizes: tuple[int, ...], args: argparse.Namespace
) -> list[float]:
    """ms per gradient of each of ``ranks`` processes running at once, by rank."""
    ctx = get_context("fork")
    shm = shared_memory.SharedMemory(create=True, size=_HEADER + num_params(sizes) * 4)
    try:
        np.ndarray((ranks,), np.int64, shm.buf, 0)[:] = 0
        np.ndarray((num_params(sizes),), np.float32, shm.buf, _HEADER)[:] = init_params(sizes, 0)
        out = ctx.Queue()
        procs = [
            ctx.Process(target=_gradients, args=(r, ranks, shm.name, mode, sizes, args, out))
            for r in range(ranks)
        ]
        for p in procs:
            p.start()
        results = dict(out.get(timeout=600) for _ in procs)
        for p in procs:
            p.join()
        return [results[r] for r in range(ranks)]
    finally:
        shm.close()
        shm.unlink()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--rows", type=int, default=32)
    ap.add_argument("--hidden", default="128,64")
    args = ap.parse_args()
    sizes = (784, *(int(h) for h in args.hidden.split(",")), 10)
    print(f"network {sizes}, {args.rows} rows a gradient, {args.steps} steps, ms per gradient")
    ratios: dict[str, list[float]] = {mode: [] for mode in MODES}
    for round_ in range(1, args.rounds + 1):
        (alone,) = side_by_side(1, "private", sizes, args)
        line = [f"round {round_}: alone {alone:.3f}"]
        for mode in MODES:
            a, b = side_by_side(2, mode, sizes, args)
            ratios[mode].append(max(a, b) / min(a, b))
            line.append(f"{mode} {a:.3f} | {b:.3f} ({ratios[mode][-1]:.2f}x)")
        print("  ".join(line), flush=True)
    for mode in MODES:
        rs = ratios[mode]
        print(f"{mode:9s}: slower / faster process, median {statistics.median(rs):.2f}x "
              f"(range {min(rs):.2f}-{max(rs):.2f}x)")  # fmt: skip


if __name__ == "__main__":
    main()
