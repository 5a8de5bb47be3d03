"""Fixtures for the service tests: a real server on a free 127.0.0.1 port, an httpx client,
small synthetic jobs (well under a second each) and their fault-free reference checksum."""

from __future__ import annotations

import functools
import socket
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
import uvicorn
from fastapi import FastAPI
from service_support import JOB

from otpnn.config import TrainConfig
from otpnn.data import synthetic_dataset
from otpnn.reference import train_reference
from otpnn.service import create_app
from otpnn.service.jobs import JobManager
from otpnn.service.server import READ_TIMEOUT, ServiceServer

TERMINAL = ("succeeded", "failed", "cancelled")


@functools.cache
def reference_sha() -> str:
    cfg = TrainConfig(**{k: v for k, v in JOB.items() if k not in ("workers", "backend")})
    dataset = synthetic_dataset(cfg.seed, cfg.synthetic_train, cfg.synthetic_test)
    return train_reference(cfg, dataset).params_sha256


@pytest.fixture(scope="session")
def fault_free_sha() -> str:
    return reference_sha()


@pytest.fixture
def job_config() -> dict[str, Any]:
    """The small job every test trains (a fresh copy)."""
    return dict(JOB)


@dataclass
class Service:
    url: str
    client: httpx.Client
    manager: JobManager
    state_dir: Path
    app: FastAPI
    stop: Callable[[], None]  # shut the server down now (the fixture's teardown does too)

    def submit(self, **overrides: Any) -> str:
        r = self.client.post("/jobs", json={**JOB, **overrides})
        assert r.status_code == 201, r.text
        return r.json()["id"]

    def job(self, job_id: str) -> dict[str, Any]:
        r = self.client.get(f"/jobs/{job_id}")
        assert r.status_code == 200, r.text
        return r.json()

    def wait(
        self, job_id: str, until: Callable[[dict], bool] | None = None, timeout: float = 30
    ) -> dict[str, Any]:
        """Poll until ``until(status)`` (default: a terminal state)."""
        until = until or (lambda j: j["state"] in TERMINAL)
        deadline = time.monotonic() + timeout
        while True:
            status = self.job(job_id)
            if until(status):
                return status
            assert time.monotonic() < deadline, f"timed out; last status {status}"
            time.sleep(0.05)


def free_socket() -> socket.socket:
    # IPPROTO_TCP, not 0: asyncio sets TCP_NODELAY only on sockets that say they are TCP, and
    # without it every keep-alive request waits ~40 ms for a delayed ACK.
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    return sock


@pytest.fixture
def service(tmp_path: Path) -> Iterator[Callable[..., Service]]:
    """service(headers=None, state_dir=..., read_timeout=..., **create_app's options) -> a live
    Service; every one started is shut down (jobs stopped, server thread joined) after it."""
    running: list[tuple[ServiceServer, threading.Thread, httpx.Client, socket.socket]] = []

    def start(
        *,
        headers: dict[str, str] | None = None,
        state_dir: Path | None = None,
        read_timeout: float = READ_TIMEOUT,
        **options: Any,
    ) -> Service:
        state = state_dir or tmp_path / "state"
        app = create_app(state, shutdown_timeout=15, **options)
        sock = free_socket()
        server = ServiceServer(
            uvicorn.Config(app, log_level="warning", lifespan="on"), read_timeout=read_timeout
        )
        thread = threading.Thread(target=server.run, args=([sock],), name="test-uvicorn")
        thread.start()
        url = f"http://127.0.0.1:{sock.getsockname()[1]}"
        client = httpx.Client(base_url=url, headers=headers or {}, timeout=10)
        running.append((server, thread, client, sock))
        deadline = time.monotonic() + 10
        while not server.started:
            assert thread.is_alive(), "the server thread died while starting"
            assert time.monotonic() < deadline, "the server did not start within 10 s"
            time.sleep(0.01)

        def stop() -> None:
            server.should_exit = True
            thread.join(30)
            assert not thread.is_alive(), "the server thread did not stop"

        return Service(url, client, app.state.manager, state.resolve(), app, stop)

    yield start
    for server, thread, client, sock in running:
        client.close()
        server.should_exit = True
        thread.join(30)
        sock.close()
        assert not thread.is_alive(), "the server thread did not stop"
