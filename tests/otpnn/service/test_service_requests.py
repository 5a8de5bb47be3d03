"""Bad, hostile and unauthenticated requests: each gets a clear 4xx JSON error, and nothing
changes (no job, no file outside the state dir, the service still healthy)."""

from __future__ import annotations

import select
import socket
import time
from pathlib import Path

import httpx
import pytest

from otpnn.data.mnist import FILES as MNIST_FILES
from otpnn.service.jobs import MAX_INJECTED_FAULTS
from otpnn.service.schema import NOT_MNIST

BAD_JOBS = [
    ({"epochs": "2"}, "epochs"),
    ({"epochs": True}, "epochs"),
    ({"epoch": 2}, "epoch"),
    ({"lr": -1}, "lr"),
    ({"momentum": 1.0}, "momentum"),
    ({"hidden": []}, "hidden"),
    ({"hidden": [4096] * 8}, "parameters"),
    ({"backend": "gpu"}, "backend"),
    ({"shard_size": 65}, "invalid shard_size=65: expected at most batch_size (64)"),
    ({"workers": 0}, "workers"),
    ({"faults": ["crash:gpu@step=1"]}, "unknown TARGET 'gpu'"),
    ({"faults": ["crash:worker=5@step=1"]}, "this job has workers 0..1"),
    ({"data_dir": "relative/dir"}, "must be an absolute path"),
    ({"data_dir": "/tmp/../etc"}, "without '..'"),
]


@pytest.mark.parametrize(("change", "message"), BAD_JOBS)
def test_a_bad_job_config_is_a_422_naming_the_problem(service, job_config, change, message):
    svc = service()
    r = svc.client.post("/jobs", json={**job_config, **change})
    assert r.status_code == 422, r.text
    assert message in r.json()["error"]
    assert svc.client.get("/jobs").json() == []


def fake_mnist(directory: Path, files: int = 4) -> Path:
    """A directory with (some of) the MNIST file names, empty: enough for a submit."""
    directory.mkdir(parents=True, exist_ok=True)
    for base in list(MNIST_FILES.values())[:files]:
        (directory / f"{base}.gz").touch()
    return directory


NOT_MNIST_DIRS = {
    "a system directory": lambda tmp: "/etc",
    "the server's own /proc": lambda tmp: "/proc/self",
    "root's home": lambda tmp: "/root",
    "a path that does not exist": lambda tmp: "/nonexistent/mnist",
    "a file": lambda tmp: "/etc/hostname",
    "three of the four files": lambda tmp: str(fake_mnist(tmp / "three", files=3)),
    "inside the state dir": lambda tmp: str(fake_mnist(tmp / "state" / "jobs" / "mnist")),
}


@pytest.mark.parametrize("where", NOT_MNIST_DIRS)
def test_a_data_dir_that_is_not_mnist_gets_one_generic_answer(service, tmp_path, where) -> None:
    svc = service()
    value = NOT_MNIST_DIRS[where](tmp_path)
    r = svc.client.post("/jobs", json={"data_dir": value})
    assert r.status_code == 422, r.text
    assert r.json()["error"] == f"data_dir {value!r}: {NOT_MNIST}"
    assert svc.client.get("/jobs").json() == []


def test_data_roots_confine_data_dirs_also_through_symlinks(service, tmp_path) -> None:
    root, elsewhere = tmp_path / "datasets", fake_mnist(tmp_path / "elsewhere")
    fake_mnist(root / "mnist")
    (root / "link").symlink_to(elsewhere)
    svc = service(data_roots=[root])
    for outside in (str(elsewhere), str(root / "link")):
        r = svc.client.post("/jobs", json={"data_dir": outside})
        assert r.status_code == 422, r.text
        assert r.json()["error"] == f"data_dir {outside!r}: {NOT_MNIST}"
    inside = svc.client.post("/jobs", json={"data_dir": str(root / "mnist"), "workers": 1})
    assert inside.status_code == 201, inside.text
    # Empty files: the job fails loading them, and says so without naming a server path.
    status = svc.wait(inside.json()["id"])
    assert status["state"] == "failed"
    assert status["error"] == f"data_dir: {NOT_MNIST}"


def test_the_queue_is_bounded(service, job_config) -> None:
    svc = service(max_queued=2)
    blocker = svc.submit(faults=["slow=3:worker=any@step=2"])
    waiting = [svc.submit(), svc.submit()]
    r = svc.client.post("/jobs", json=job_config)
    assert r.status_code == 429, r.text
    assert "the queue is full: 2 jobs are waiting" in r.json()["error"]
    assert len(svc.client.get("/jobs").json()) == 3
    for job_id in (*waiting, blocker):
        svc.client.post(f"/jobs/{job_id}/cancel")
        svc.wait(job_id)


def test_fault_injections_per_job_are_bounded(service) -> None:
    svc = service()
    job_id = svc.submit(faults=["slow=3:worker=any@step=2"])
    svc.wait(job_id, lambda j: j["step"] >= 1)
    never = {"spec": "slow=0.001:worker=0@step=100000"}
    for _ in range(MAX_INJECTED_FAULTS):
        assert svc.client.post(f"/jobs/{job_id}/faults", json=never).status_code == 200
    r = svc.client.post(f"/jobs/{job_id}/faults", json=never)
    assert r.status_code == 409, r.text
    assert f"has had {MAX_INJECTED_FAULTS} faults injected, the most" in r.json()["error"]
    assert len(svc.job(job_id)["injected"]) == MAX_INJECTED_FAULTS
    svc.client.post(f"/jobs/{job_id}/cancel")
    svc.wait(job_id)


@pytest.mark.parametrize(
    ("content", "status", "message"),
    [
        (b"{not json", 400, "not valid JSON"),
        (b"[1, 2]", 422, "invalid request"),
        (b'{"lr": NaN}', 422, "lr"),
        (b"", 422, "invalid request"),
    ],
)
def test_malformed_bodies_are_4xx(service, content, status, message) -> None:
    svc = service()
    r = svc.client.post("/jobs", content=content, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert message in r.json()["error"]


def test_oversized_bodies_are_413_declared_or_streamed(service) -> None:
    svc = service()
    big = b'{"faults": ["' + b"x" * 70_000 + b'"]}'
    r = svc.client.post("/jobs", content=big, headers={"content-type": "application/json"})
    assert r.status_code == 413
    assert "over 65536 bytes" in r.json()["error"]
    chunked = svc.client.post(
        "/jobs",
        content=iter([big[:40_000], big[40_000:]]),
        headers={"content-type": "application/json"},
    )
    assert chunked.status_code == 413
    assert svc.client.get("/jobs").json() == []


@pytest.mark.parametrize(
    "path",
    [
        "/jobs/000000000000",
        "/jobs/..%2F..%2Fetc%2Fpasswd",
        "/jobs/..%2Fjobs/report",
        "/jobs/%2e%2e/model",
        "/jobs/ABCDEF123456/report",
    ],
)
def test_unknown_or_traversing_job_ids_are_404(service, path) -> None:
    svc = service()
    r = svc.client.get(path)
    assert r.status_code == 404
    assert "error" in r.json()


def test_faults_bad_spec_unknown_job_and_not_running(service) -> None:
    svc = service()
    missing = svc.client.post("/jobs/000000000000/faults", json={"spec": "crash:worker=0@step=1"})
    assert missing.status_code == 404
    blocker = svc.submit(faults=["slow=1:worker=any@step=2"])
    queued = svc.submit()
    bad = svc.client.post(f"/jobs/{blocker}/faults", json={"spec": "explode:worker=0@step=1"})
    assert bad.status_code == 422
    assert "unknown KIND 'explode'" in bad.json()["error"]
    typed = svc.client.post(f"/jobs/{blocker}/faults", json={"spec": 5})
    assert typed.status_code == 422
    not_running = svc.client.post(f"/jobs/{queued}/faults", json={"spec": "crash:worker=0@step=1"})
    assert not_running.status_code == 409
    assert "is queued" in not_running.json()["error"]
    early = svc.client.get(f"/jobs/{queued}/report")
    assert early.status_code == 409
    for job_id in (queued, blocker):
        svc.client.post(f"/jobs/{job_id}/cancel")
        svc.wait(job_id)
    assert svc.client.get("/healthz").json()["jobs"]["cancelled"] == 2


TOKEN = "s3cret-token-0123456789"


def test_with_a_token_everything_but_healthz_needs_it(service) -> None:
    svc = service(token=TOKEN)
    anonymous = svc.client
    assert anonymous.get("/healthz").status_code == 200
    for method, path in [("GET", "/jobs"), ("POST", "/jobs"), ("GET", "/tree"),
                         ("GET", "/metrics"), ("GET", "/openapi.json"), ("GET", "/docs"),
                         ("GET", "/jobs/000000000000")]:  # fmt: skip
        r = anonymous.request(method, path)
        assert r.status_code == 401, (method, path)
        assert r.headers["www-authenticate"] == "Bearer"
        assert r.json() == {"error": "missing or wrong bearer token"}
    wrong = anonymous.get("/jobs", headers={"Authorization": f"Bearer {TOKEN}x"})
    assert wrong.status_code == 401
    basic = anonymous.get("/jobs", headers={"Authorization": TOKEN})
    assert basic.status_code == 401
    ok = anonymous.get("/jobs", headers={"Authorization": f"Bearer {TOKEN}"})
    assert ok.status_code == 200
    assert ok.json() == []


def test_without_a_token_the_api_is_open(service) -> None:
    svc = service()
    assert svc.client.get("/jobs").status_code == 200
    assert svc.client.get("/metrics").status_code == 200


def test_openapi_documents_the_contract(service) -> None:
    svc = service()
    doc = svc.client.get("/openapi.json").json()
    assert set(doc["paths"]) >= {
        "/jobs", "/jobs/{job_id}", "/jobs/{job_id}/cancel", "/jobs/{job_id}/report",
        "/jobs/{job_id}/model", "/jobs/{job_id}/faults", "/tree", "/healthz", "/metrics",
    }  # fmt: skip
    fields = doc["components"]["schemas"]["JobRequest"]["properties"]
    assert {"dataset", "data_dir", "epochs", "batch_size", "workers", "backend", "seed"} <= set(
        fields
    )
    assert doc["components"]["schemas"]["JobRequest"]["additionalProperties"] is False


def test_the_server_binds_loopback_only(service) -> None:
    svc = service()
    assert httpx.URL(svc.url).host == "127.0.0.1"


def test_a_client_that_sends_its_request_too_slowly_is_cut_off(service) -> None:
    """Half-open or trickling connections are closed after --read-timeout; others are served."""
    svc = service(read_timeout=0.5)
    address = ("127.0.0.1", httpx.URL(svc.url).port)
    with (
        socket.create_connection(address, timeout=15) as silent,
        socket.create_connection(address, timeout=15) as half_open,
        socket.create_connection(address, timeout=15) as trickling,
    ):
        half_open.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\n")  # never ends its headers
        trickling.sendall(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
        for _ in range(150):  # a byte every 0.1 s: each would restart uvicorn's keep-alive timer
            try:
                trickling.sendall(b"a")
            except OSError:
                break
            if select.select([trickling], [], [], 0.1)[0]:
                break
        else:
            pytest.fail("a client trickling its headers was still connected after 15 s")
        assert _closed(trickling)
        assert svc.client.get("/healthz").status_code == 200  # the service answers the rest
        assert _closed(silent)
        assert _closed(half_open)


def _closed(sock: socket.socket) -> bool:
    """The server closed the connection without answering (or reset it)."""
    try:
        return sock.recv(1024) == b""
    except ConnectionResetError:
        return True


def test_a_slow_answer_is_not_cut_by_the_read_deadline(service, monkeypatch) -> None:
    """The deadline covers reading a request, not the work on it: a handler may take longer."""
    svc = service(read_timeout=0.3)
    counts = svc.manager.counts

    def slow_counts() -> dict[str, int]:
        time.sleep(1.0)
        return counts()

    monkeypatch.setattr(svc.manager, "counts", slow_counts)
    r = svc.client.get("/healthz")
    assert r.status_code == 200
    assert r.json()["status"] == "ok"
