"""API latency under load, and what that load costs the training, on a real ``otpnn serve``.

One service process (``--max-jobs 2``) trains two identical jobs at a time, three rounds in a
row: quiet, under load, quiet again. Under load a client thread sends ``--rate`` status requests
a second (GET /jobs/{id}, alternating jobs, open loop: a slow answer does not lower the rate)
for as long as the jobs train. Printed: latency p50/p95/p99/max, the rate achieved, and the mean
epoch seconds (training loop only, from the jobs' reports) quiet vs under load.

    python benchmarks/service_load.py [--rate 50] [--train 32768] [--epochs 4] [--workers 1]
"""

from __future__ import annotations

import argparse
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

import httpx


def start_service(max_jobs: int) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    state = tempfile.mkdtemp(prefix="otpnn-load-")
    proc = subprocess.Popen(
        [sys.executable, "-m", "otpnn", "serve", "--port", str(port), "--state-dir", state,
         "--max-jobs", str(max_jobs), "--log-format", "json"],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            httpx.get(url + "/healthz")
            return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    proc.kill()
    sys.exit("the service did not start")


def load(client: httpx.Client, ids: list[str], rate: float, stop: threading.Event) -> list[float]:
    """Open-loop status requests at ``rate``/s until ``stop``; their latencies in seconds."""
    latencies = []
    period = 1.0 / rate
    next_at = time.perf_counter()
    i = 0
    while not stop.is_set():
        t0 = time.perf_counter()
        r = client.get(f"/jobs/{ids[i % len(ids)]}")
        latencies.append(time.perf_counter() - t0)
        r.raise_for_status()
        i += 1
        next_at += period
        time.sleep(max(0.0, next_at - time.perf_counter()))
    return latencies


def train_round(client: httpx.Client, job: dict, rate: float | None) -> tuple[list, list, float]:
    """Two jobs at once; returns (epoch seconds of both, latencies, wall seconds under load)."""
    ids = [client.post("/jobs", json=job).raise_for_status().json()["id"] for _ in range(2)]
    stop = threading.Event()
    latencies: list[float] = []
    loader = None
    if rate:
        loader = threading.Thread(target=lambda: latencies.extend(load(client, ids, rate, stop)))
        loader.start()
    t0 = time.perf_counter()
    while any(client.get(f"/jobs/{i}").json()["state"] in ("queued", "running") for i in ids):
        time.sleep(0.5)
    wall = time.perf_counter() - t0
    stop.set()
    if loader is not None:
        loader.join()
    epochs = []
    for i in ids:
        status = client.get(f"/jobs/{i}").json()
        if status["state"] != "succeeded":
            sys.exit(f"job {i} {status['state']}: {status['error']}")
        epochs += [row["seconds"] for row in client.get(f"/jobs/{i}/report").json()["epochs"]]
    return epochs, latencies, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--rate", type=float, default=50.0)
    parser.add_argument("--train", type=int, default=32768, help="synthetic training samples")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--workers", type=int, default=1, help="per job")
    args = parser.parse_args()
    job = {
        "dataset": "synthetic",
        "synthetic_train": args.train,
        "synthetic_test": 1024,
        "epochs": args.epochs,
        "workers": args.workers,
        "backend": "process",
        "seed": 3,
    }
    proc, url = start_service(max_jobs=2)
    try:
        with httpx.Client(base_url=url, timeout=30) as client:
            quiet1, _, _ = train_round(client, job, None)
            loaded, latencies, wall = train_round(client, job, args.rate)
            quiet2, _, _ = train_round(client, job, None)
    finally:
        proc.terminate()
        proc.wait(60)
    quiet = quiet1 + quiet2
    ms = sorted(x * 1000 for x in latencies)

    def pct(p: float) -> float:
        return ms[min(len(ms) - 1, int(p / 100 * len(ms)))]

    print(f"two jobs x {args.epochs} epochs x {args.train} samples, {args.workers} worker(s) each")
    print(f"load: {len(ms)} status requests in {wall:.1f} s ({len(ms) / wall:.1f}/s)")
    print(f"latency ms: p50 {pct(50):.1f}  p95 {pct(95):.1f}  p99 {pct(99):.1f}  max {ms[-1]:.1f}")
    q, lo = statistics.mean(quiet), statistics.mean(loaded)
    print(f"epoch seconds: quiet {q:.3f} (n={len(quiet)}), under load {lo:.3f} (n={len(loaded)})")
    print(f"slowdown under load: {100 * (lo / q - 1):+.1f} %")


if __name__ == "__main__":
    main()
