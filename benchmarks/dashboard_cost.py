"""What an open dashboard tab costs the service: CPU seconds of the service process per minute.

A real ``otpnn serve`` (its own process) runs one finished job and, for the "training" rows, a
long job that trains meanwhile. Windows of ``--seconds`` alternate, ``--rounds`` times: no tab,
then one headless Chromium tab (Debian's, driven by Playwright) watching that job (the live
feed with tree, curves and events). The service process's own user+system CPU time (its
workers are other processes and are not counted) is read from /proc before and after each
window. Printed: CPU seconds per minute, median over the rounds, for each case.

    python benchmarks/dashboard_cost.py [--seconds 20] [--rounds 3]
"""

from __future__ import annotations

import argparse
import os
import shutil
import socket
import statistics
import subprocess
import sys
import tempfile
import time

import httpx
from playwright.sync_api import sync_playwright

CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
TICKS = os.sysconf("SC_CLK_TCK")


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of the process itself (not its children), from /proc."""
    with open(f"/proc/{pid}/stat") as f:
        fields = f.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def start_service(state: str) -> tuple[subprocess.Popen, str]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    proc = subprocess.Popen(
        [sys.executable, "-m", "otpnn", "serve", "--port", str(port), "--state-dir", state],
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            httpx.get(url + "/healthz")
            return proc, url
        except httpx.TransportError:
            time.sleep(0.1)
    raise RuntimeError("the service did not start")


def submit(url: str, **job: object) -> str:
    r = httpx.post(f"{url}/jobs", json={"dataset": "synthetic", "workers": 2, **job})
    r.raise_for_status()
    return r.json()["id"]


def wait(url: str, job_id: str, state: str) -> None:
    while httpx.get(f"{url}/jobs/{job_id}").json()["state"] != state:
        time.sleep(0.2)


def window(pid: int, seconds: float) -> float:
    """CPU seconds per minute of ``pid`` over ``seconds``."""
    before, t0 = cpu_seconds(pid), time.monotonic()
    time.sleep(seconds)
    return (cpu_seconds(pid) - before) * 60 / (time.monotonic() - t0)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--seconds", type=float, default=20.0)
    parser.add_argument("--rounds", type=int, default=3)
    args = parser.parse_args()
    state = tempfile.mkdtemp(prefix="otpnn-dashboard-cost-")
    proc, url = start_service(state)
    results: dict[str, list[float]] = {}
    try:
        done = submit(url, epochs=1)
        wait(url, done, "succeeded")
        with sync_playwright() as p:
            browser = p.chromium.launch(executable_path="/usr/bin/chromium", args=CHROMIUM_ARGS)
            for case in ("idle", "training"):
                watched = done
                if case == "training":  # long enough for every window of every round
                    watched = submit(url, synthetic_train=65536, epochs=1000)
                    wait(url, watched, "running")
                for _ in range(args.rounds):
                    quiet = window(proc.pid, args.seconds)
                    page = browser.new_page()
                    page.goto(f"{url}/#job={watched}")
                    page.wait_for_selector("#tree g.node")
                    watching = window(proc.pid, args.seconds)
                    page.close()
                    results.setdefault(f"{case}, no tab", []).append(quiet)
                    results.setdefault(f"{case}, one tab", []).append(watching)
                if case == "training":
                    httpx.post(f"{url}/jobs/{watched}/cancel")
                    wait(url, watched, "cancelled")
            browser.close()
    finally:
        proc.terminate()
        proc.wait(60)
        shutil.rmtree(state, ignore_errors=True)
    print(
        "service process CPU seconds per minute "
        f"(median of {args.rounds} windows of {args.seconds:.0f} s)"
    )
    for name, values in results.items():
        spread = ", ".join(f"{v:.2f}" for v in values)
        print(f"  {name:<20} {statistics.median(values):6.2f}   ({spread})")


if __name__ == "__main__":
    main()
