"""A client of ``otpnn serve``: submit a job, follow it, inject a fault, download the model.

Run it against a service you started (``otpnn serve --state-dir ./state``)::

    python examples/service_client.py --url http://127.0.0.1:8765 [--token-file F]

or with no ``--url``: it starts a service of its own on a free port in a temporary state dir and
stops it (SIGTERM) at the end. Only the standard library is used on the client side.

What it shows: the job config is the CLI's options as JSON; a worker SIGKILLed through the API
in the middle of training is restarted and its work redone; a second, fault-free job with the same
config is run too, and the two checksums are compared (exit 1 if they differ, or if the fault
never fired); the weights come back as safetensors (never pickle), written to ``--out`` (default:
a new temporary directory, never the current one).
"""

from __future__ import annotations

import argparse
import json
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

JOB = {
    "dataset": "synthetic",
    "synthetic_train": 4096,
    "synthetic_test": 512,
    "epochs": 3,
    "batch_size": 64,
    "workers": 2,
    "backend": "process",
    "seed": 1,
}
FAULT = "kill:worker=0@step=100"


class Client:
    def __init__(self, url: str, token: str | None) -> None:
        self.url = url.rstrip("/")
        self.headers = {"Authorization": f"Bearer {token}"} if token else {}

    def call(self, method: str, path: str, body: Any = None) -> Any:
        data = None if body is None else json.dumps(body).encode()
        headers = {**self.headers, "Content-Type": "application/json"}
        req = urllib.request.Request(self.url + path, data, headers, method=method)
        try:
            with urllib.request.urlopen(req, timeout=30) as resp:
                raw = resp.read()
                is_json = resp.headers.get_content_type() == "application/json"
                return json.loads(raw) if is_json else raw
        except urllib.error.HTTPError as e:
            sys.exit(f"{method} {path}: HTTP {e.code}: {e.read().decode()}")


def follow(client: Client, job_id: str, fault: str | None) -> dict[str, Any]:
    """Print progress once per epoch and inject ``fault`` once the job is running."""
    injected, shown = fault is None, -1
    while True:
        job = client.call("GET", f"/jobs/{job_id}")
        if job["state"] == "running" and job["step"] > 0 and not injected:
            client.call("POST", f"/jobs/{job_id}/faults", {"spec": fault})
            print(f"injected {fault} at step {job['step']}; worker pids {job['pids']}")
            injected = True
        m = job["metrics"]  # the latest finished epoch
        if m and m["epoch"] != shown:
            shown = m["epoch"]
            print(
                f"  epoch {m['epoch']}: test accuracy {m['test_accuracy']:.4f}, "
                f"{m['samples_per_second']:.0f} samples/s, restarts {job['restarts']}"
            )
        if job["state"] in ("succeeded", "failed", "cancelled"):
            return job
        time.sleep(0.2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", help="A running service; default: start one.")
    parser.add_argument("--token-file", type=Path)
    parser.add_argument(
        "--out", type=Path, help="Where to write the weights [default: a new temporary directory]."
    )
    args = parser.parse_args()
    token = args.token_file.read_text().strip() if args.token_file else None
    out = args.out or Path(tempfile.mkdtemp(prefix="otpnn-client-")) / "model.safetensors"
    server = None if args.url else start_service()
    url = args.url or server[1]
    try:
        client = Client(url, token)
        faulty = run_job(client, FAULT)
        clean = run_job(client, None)
        if faulty["faults_injected"] < 1:
            sys.exit(f"the fault {FAULT} never fired (the job ended first): nothing was tested")
        same = faulty["final"]["params_sha256"] == clean["final"]["params_sha256"]
        print(
            f"params sha256 with the fault {faulty['final']['params_sha256']}, fault-free "
            f"{clean['final']['params_sha256']}: {'equal' if same else 'DIFFERENT'}"
        )
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_bytes(client.call("GET", f"/jobs/{faulty['id']}/model"))
        print(f"weights of job {faulty['id']} in {out}")
        if not check_weights(out, faulty["final"]["params_sha256"]) or not same:
            sys.exit(1)
    finally:
        if server is not None:
            server[0].send_signal(signal.SIGTERM)
            server[0].wait(60)
            shutil.rmtree(server[2], ignore_errors=True)


def run_job(client: Client, fault: str | None) -> dict[str, Any]:
    """Submit JOB, follow it to its end (injecting ``fault``); exit if it did not succeed."""
    job = client.call("POST", "/jobs", JOB)
    print(
        f"submitted job {job['id']} ({job['state']}), {'fault ' + fault if fault else 'no fault'}"
    )
    job = follow(client, job["id"], fault)
    print(f"job {job['id']} {job['state']}: restarts {job['restarts_by_actor']}")
    if job["state"] != "succeeded":
        sys.exit(f"the job did not succeed: {job['error']}")
    return job


def start_service() -> tuple[subprocess.Popen, str, str]:
    """``otpnn serve`` on a free port with a temporary state dir: (process, url, state dir)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    state = tempfile.mkdtemp(prefix="otpnn-state-")
    proc = subprocess.Popen(
        [sys.executable, "-m", "otpnn", "serve", "--port", str(port), "--state-dir", state,
         "--log-format", "json"],
        stderr=subprocess.DEVNULL,
    )  # fmt: skip
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            urllib.request.urlopen(url + "/healthz", timeout=1).close()
            print(f"started otpnn serve at {url} (state dir {state})")
            return proc, url, state
        except OSError:
            time.sleep(0.1)
    proc.kill()
    proc.wait()
    shutil.rmtree(state, ignore_errors=True)
    sys.exit("the service did not start")


def check_weights(path: Path, expected: str) -> bool:
    """Load the downloaded weights without pickle and check them against the job's checksum
    (True where otpnn is not installed: the file is plain safetensors, not checked here)."""
    try:
        from otpnn.checkpoint import load_weights
        from otpnn.model import params_sha256
    except ImportError:
        return True
    params, sizes, _ = load_weights(path)
    ok = params_sha256(params) == expected
    print(f"weights: layers {sizes}, checksum {'matches' if ok else 'DOES NOT match'}")
    return ok


if __name__ == "__main__":
    main()
