"""otpnn vs the Elixir reference on real MNIST: same init, same order, same samples.

Exports the initial parameters and order for the default network (784-128-64-10, batch 64,
lr 0.2, momentum 0.5, seed 0) on a fixed subset (the first --train training and --test test
images: pure-Elixir maths runs ~100 samples/s per worker, a full epoch would take ~10 minutes),
trains it with otpnn (process workers) and with examples/elixir_reference for each worker count,
then prints `otpnn compare`'s table and verdict and writes the figure.

    python benchmarks/compare_mnist.py [--train 10000] [--test 10000] [--epochs 1]
        [--workers 1,2] [--dtype float32|float64] [--out DIR]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import subprocess
from pathlib import Path

from otpnn.compare import compare, describe, plot, table
from otpnn.config import TrainConfig
from otpnn.data import find_mnist, load_dataset
from otpnn.interchange import export_init, limit_dataset
from otpnn.training import TrainingJob, final_summary
from otpnn.training.report import job_report, write_report

REPO = Path(__file__).resolve().parents[1]
ELIXIR = REPO / "examples" / "elixir_reference"


def run_otpnn(cfg: TrainConfig, dataset, workers: int, report: Path) -> None:
    job = TrainingJob(dataclasses.replace(cfg, workers=workers, backend="process"), dataset)
    job.start()
    try:
        result = job.wait()
    finally:
        job.stop()
    write_report(report, job_report(job, final_summary(job, result)))


def run_elixir(export: Path, workers: int, report: Path, build: Path) -> None:
    env = {**os.environ, "MIX_BUILD_PATH": str(build)}
    cmd = [
        "mix",
        "otpnn_ref.train",
        str(export),
        "--workers",
        str(workers),
        "--report",
        str(report),
    ]
    subprocess.run(cmd, cwd=ELIXIR, env=env, check=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", type=int, default=10000)
    p.add_argument("--test", type=int, default=10000)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--workers", default="1,2")
    p.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    p.add_argument("--data-dir", default=os.environ.get("OTPNN_DATA_DIR", "../shared/data/mnist"))
    p.add_argument("--out", type=Path, default=REPO / "runs" / "compare_mnist")
    args = p.parse_args()
    args.out = args.out.resolve()  # mix runs in the Elixir project's directory
    cfg = TrainConfig(dataset="mnist", data_dir=args.data_dir, epochs=args.epochs, dtype=args.dtype)
    dataset = limit_dataset(load_dataset(cfg, download=False), args.train, args.test)
    export = args.out / "export"
    export_init(cfg, dataset, export, mnist_dir=str(find_mnist(args.data_dir)))
    reports = []
    for w in map(int, args.workers.split(",")):
        reports.append(args.out / f"otpnn-{w}w.json")
        run_otpnn(cfg, dataset, w, reports[-1])
    for w in map(int, args.workers.split(",")):
        reports.append(args.out / f"elixir-{w}w.json")
        run_elixir(export, w, reports[-1], args.out / "_build")
    loaded, verdict = compare(reports, 1e-3, 0.005)
    plot(loaded, args.out / "compare_mnist.png")
    print(
        table(loaded), "", describe(verdict), f"figure: {args.out / 'compare_mnist.png'}", sep="\n"
    )


if __name__ == "__main__":
    main()
