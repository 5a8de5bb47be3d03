"""Recovery time per fault kind, and what a 1% chaos rate costs, measured on real runs.

For each fault kind and backend, a small job is trained ``--repeat`` times with one fault at a
fixed step. The recovery time runs from the fault (its ``fault_injected`` event) to the first
progress report of that step done (the job's progress callback), so it covers detection, the
restart or the switch to the surviving workers, and the redo; a step of this small job takes
about a millisecond. The coordinator of a lockstep run reports progress every 20 ms, so that is
the resolution here. The median over repeats is printed. Then one epoch of MNIST (or of the
synthetic set) is trained with and without ``--chaos 0.01``, side by side.

    python benchmarks/fault_recovery.py [--repeat 5] [--data-dir DIR]
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

from otpnn.config import TrainConfig
from otpnn.data import load_dataset
from otpnn.faults import Chaos, parse_fault
from otpnn.logs import configure_logging
from otpnn.model import params_sha256
from otpnn.training import JobOptions, TrainingJob
from otpnn.training.state import Progress

SHARED_MNIST = Path(__file__).resolve().parents[2] / "shared" / "data" / "mnist"
FAULT_STEP = 10
STEP_TIMEOUT = 0.5  # what a hang costs is mostly this deadline: kept short here

SMALL = TrainConfig(
    dataset="synthetic", synthetic_train=2048, synthetic_test=256, epochs=1, batch_size=64, seed=3
)


def timed_run(cfg: TrainConfig, dataset, options: JobOptions) -> tuple[float, str, int, float]:
    """Train; return the recovery time of the job's fault (0 without one), the checksum, the
    restart count and the first epoch's seconds."""
    stamps: list[tuple[float, int]] = []

    def on_progress(p: Progress) -> None:
        stamps.append((time.time(), p.step))  # events carry time.time() too

    job = TrainingJob(cfg, dataset, options, on_progress=on_progress)
    result = job.run()
    faults = [e.time for e in job.state.events() if e.kind == "fault_injected"]
    recovery = 0.0
    if faults:
        done = next(t for t, step in stamps if step >= FAULT_STEP and t >= faults[0])
        recovery = done - faults[0]
    sha = params_sha256(result["params"])
    return recovery, sha, job.state.restarts, result["history"][0]["seconds"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--data-dir", default=os.environ.get("OTPNN_DATA_DIR", str(SHARED_MNIST)))
    args = ap.parse_args()
    configure_logging(quiet=True)

    dataset = load_dataset(SMALL)
    print(f"recovery time, median of {args.repeat} (fault at step {FAULT_STEP}, 2 workers)")
    print(f"{'fault':<34} {'backend':<8} {'median ms':>9} {'min ms':>7} {'max ms':>7}  same sha")
    clean = {}
    for backend in ("thread", "process"):
        cfg = TrainConfig(
            **{**SMALL.to_dict(), "hidden": SMALL.hidden, "backend": backend, "workers": 2}
        )
        _, clean[backend], _, _ = timed_run(cfg, dataset, JobOptions())
        for spec in (
            f"crash:worker=1@step={FAULT_STEP}",
            f"kill:worker=1@step={FAULT_STEP}",
            f"exit:worker=1@step={FAULT_STEP}",
            f"hang:worker=1@step={FAULT_STEP}",
            f"crash:coordinator@step={FAULT_STEP}",
            f"crash:loader@step={FAULT_STEP}",
        ):
            options = JobOptions(faults=(parse_fault(spec),), step_timeout=STEP_TIMEOUT)
            runs = [timed_run(cfg, dataset, options) for _ in range(args.repeat)]
            ms = [recovery * 1000 for recovery, _, _, _ in runs]
            same = all(sha == clean[backend] for _, sha, _, _ in runs)
            print(
                f"{spec:<34} {backend:<8} {statistics.median(ms):>9.1f} {min(ms):>7.1f} "
                f"{max(ms):>7.1f}  {same}"
            )

    mnist = TrainConfig(
        dataset="mnist", data_dir=args.data_dir, epochs=1, batch_size=256, workers=2
    )
    try:
        data = load_dataset(mnist, download=False)
        cfg = mnist
    except Exception as e:  # no MNIST here: the synthetic set still shows the overhead
        print(f"(MNIST not available: {e}; chaos overhead measured on the synthetic set)")
        data, cfg = (
            dataset,
            TrainConfig(**{**SMALL.to_dict(), "hidden": SMALL.hidden, "workers": 2}),
        )
    print(
        f"\nchaos overhead: one epoch of {cfg.dataset}, batch {cfg.batch_size}, 2 process workers"
    )
    lenient = {"max_restarts": 1000, "max_seconds": 1.0}  # 1% of ~1000 shards is ~10 crashes
    for _ in range(2):
        for rate in (0.0, 0.01):
            options = JobOptions(chaos=Chaos(rate, seed=1) if rate else None, **lenient)
            _, sha, restarts, seconds = timed_run(cfg, data, options)
            print(f"  chaos {rate:<5} {seconds:6.2f} s  restarts {restarts:>3}  sha {sha[:12]}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
