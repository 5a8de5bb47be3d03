"""The dashboard's server side, over real HTTP: the page and its security headers, the open and
the guarded paths, the live feed (SSE), the job timeline and curves, Prometheus labels."""

from __future__ import annotations

import json
import re
import shutil
import subprocess
import threading
import time
from collections.abc import Callable, Iterator

import httpx
import pytest

from otpnn.service.dashboard import STATIC

TOKEN = "s3cret-token-for-the-dashboard"
AUTH = {"Authorization": f"Bearer {TOKEN}"}
# ~2,500 steps: runs for seconds, long enough to look at while it runs.
LONG = {"synthetic_train": 8192, "epochs": 20}


def read_events(lines: Iterator[str], until: str, limit: int = 800) -> Iterator[tuple[str, dict]]:
    """(event, data) pairs from an SSE response's lines, up to and including the first
    ``until``. The caller keeps ``lines``: dropping the iterator closes the connection."""
    name = None
    for i, line in enumerate(lines):
        assert i < limit, f"no {until} event in the first {limit} lines"
        if line.startswith("event: "):
            name = line[len("event: ") :]
        elif line.startswith("data: ") and name is not None:
            yield name, json.loads(line[len("data: ") :])
            if name == until:
                return
            name = None
    raise AssertionError(f"the stream ended before a {until} event")


def wait_for(condition: Callable[[], bool], what: str, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


# -- the page ---------------------------------------------------------------------------------
def test_the_page_is_served_with_a_policy_that_forbids_inline_and_foreign_code(service) -> None:
    svc = service()
    page = svc.client.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    csp = dict(d.split(" ", 1) for d in page.headers["content-security-policy"].split("; "))
    assert csp["default-src"] == "'none'"
    for directive in ("script-src", "style-src", "connect-src"):
        assert csp[directive] == "'self'", directive  # no 'unsafe-inline', no other origin
    assert csp["frame-ancestors"] == "'none'"
    assert page.headers["x-content-type-options"] == "nosniff"
    for asset in ("app.js", "dashboard.css"):
        r = svc.client.get(f"/ui/{asset}")
        assert r.status_code == 200
        assert "content-security-policy" in r.headers
    # The API's own responses keep their headers (FastAPI's /docs loads its assets from a CDN).
    assert "content-security-policy" not in svc.client.get("/healthz").headers


def test_the_page_has_no_inline_code_and_names_no_other_origin() -> None:
    html = (STATIC / "index.html").read_text()
    scripts = re.findall(r"<script\b([^>]*)>(.*?)</script>", html, re.S)
    assert scripts, "the page loads its code"
    assert all('src="/ui/' in attrs and body.strip() == "" for attrs, body in scripts)
    assert not re.search(r"\sstyle=|\son[a-z]+=", html)  # inline styles / event handlers
    for path in STATIC.iterdir():
        text = path.read_text()
        assert not re.search(r"https?://(?!www\.w3\.org/2000/svg)", text), path.name
        assert "localStorage" not in text, path.name  # the token is kept in memory only


def test_with_a_token_the_page_is_open_and_every_data_path_is_not(service) -> None:
    svc = service(token=TOKEN)
    assert svc.client.get("/").status_code == 200
    assert svc.client.get("/ui/app.js").status_code == 200
    assert TOKEN not in svc.client.get("/").text
    job_id = httpx.post(f"{svc.url}/jobs", json={"dataset": "synthetic"}, headers=AUTH).json()["id"]
    guarded = ("/live", f"/live?job={job_id}", f"/jobs/{job_id}/events", f"/jobs/{job_id}/curves")
    for path in guarded:
        r = svc.client.get(path)
        assert r.status_code == 401, path
        assert job_id not in r.text
    # The open prefix does not open the API: a path that climbs out of /ui/ is not routed there.
    with httpx.Client(base_url=svc.url) as raw:  # httpx would tidy the path: send it raw
        r = raw.send(raw.build_request("GET", httpx.URL(svc.url, raw_path=b"/ui/../jobs")))
        assert r.status_code in (401, 404)
        assert job_id not in r.text
    httpx.post(f"{svc.url}/jobs/{job_id}/cancel", headers=AUTH)


# -- the live feed ----------------------------------------------------------------------------
def test_the_feed_sends_a_watched_jobs_status_tree_curves_and_events(service) -> None:
    svc = service()
    job_id = svc.submit()
    svc.wait(job_id)
    with svc.client.stream("GET", f"/live?job={job_id}") as r:
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("text/event-stream")
        got = dict(read_events(r.iter_lines(), until="events"))
    assert got["hello"]["job"] == job_id
    assert got["status"] == svc.job(job_id)
    job_node = got["tree"]["children"][0]
    assert job_node["id"] == "jobs"  # the finished job's tree is gone; the service's is there
    assert [row["epoch"] for row in got["curves"]["epochs"]] == [1, 2]
    assert got["events"] == svc.client.get(f"/jobs/{job_id}/events").json()


def test_a_look_sends_nothing_when_nothing_changed(service) -> None:
    from otpnn.service.live import LiveFeed, _Cursor

    svc = service()
    job_id = svc.submit()
    svc.wait(job_id)
    feed = LiveFeed(svc.manager)
    cursor = _Cursor(job_id)
    first = feed.look(cursor)
    assert {f.split("\n", 1)[0] for f in first} == {
        "event: status",
        "event: tree",
        "event: curves",
        "event: events",
    }
    assert feed.look(cursor) == []


def test_an_unknown_job_is_refused_before_any_stream(service) -> None:
    svc = service()
    r = svc.client.get("/live?job=nope")
    assert r.status_code == 404
    assert r.json() == {"error": "no job with id 'nope'"}
    assert svc.client.get("/jobs/nope/events").status_code == 404
    assert svc.client.get("/jobs/nope/curves").status_code == 404


def test_a_closed_client_stops_its_stream(service) -> None:
    """A closed tab costs nothing: its stream's loop ends as the connection goes."""
    svc = service()
    live = svc.app.state.live
    with httpx.Client(base_url=svc.url) as tab, tab.stream("GET", "/live") as r:
        lines = r.iter_lines()  # kept: dropping it would close the connection here already
        dict(read_events(lines, until="hello"))
        wait_for(lambda: live.streams == 1, "the stream to be counted")
        assert live.streams == 1  # still open while the client is
    # the response and the client are closed: the connection is gone
    wait_for(lambda: live.streams == 0, "the stream to end after its client left")


def test_open_streams_do_not_hold_up_the_shutdown(service) -> None:
    svc = service()
    live = svc.app.state.live
    opened = threading.Event()

    def tab() -> None:
        with (
            httpx.Client(base_url=svc.url, timeout=60) as client,
            client.stream("GET", "/live") as r,
        ):
            opened.set()
            for _ in r.iter_lines():
                pass  # until the server ends the stream

    reader = threading.Thread(target=tab, name="test-tab")
    reader.start()
    assert opened.wait(10)
    wait_for(lambda: live.streams == 1, "the stream to be counted")
    # The fixture's teardown stops the server (no graceful timeout) and joins it: without
    # close() it would wait for this stream forever.
    svc.stop()
    reader.join(30)
    assert not reader.is_alive(), "the stream did not end when the server shut down"
    assert live.streams == 0


# -- a job's timeline and curves --------------------------------------------------------------
def test_events_and_curves_of_a_job_with_a_recovered_kill(service, fault_free_sha) -> None:
    svc = service()
    job_id = svc.submit(faults=["kill:worker=0@step=5"])
    live_events = []

    def seen_running() -> bool:
        if svc.job(job_id)["state"] == "running":
            live_events[:] = svc.client.get(f"/jobs/{job_id}/events").json()
        return svc.job(job_id)["state"] != "running"

    wait_for(seen_running, "the job to finish")
    status = svc.job(job_id)
    assert status["state"] == "succeeded"
    assert status["final"]["params_sha256"] == fault_free_sha
    events = svc.client.get(f"/jobs/{job_id}/events").json()
    assert events == svc.client.get(f"/jobs/{job_id}/report").json()["events"]
    assert live_events == events[: len(live_events)]  # live, then from the report: one list
    kinds = [(e["kind"], e["actor"]) for e in events]
    for expected in [
        ("fault_injected", "worker-0"),
        ("worker_killed", "worker-0"),  # a SIGKILL, reported as such
        ("recovered", "coordinator"),
        ("restart", "worker-0"),
    ]:
        assert expected in kinds
    curves = svc.client.get(f"/jobs/{job_id}/curves").json()
    assert [row["epoch"] for row in curves["epochs"]] == [1, 2]
    assert curves["running"] is None


def test_curves_of_a_running_job_show_the_epoch_in_progress(service) -> None:
    svc = service()
    job_id = svc.submit(**LONG, checkpoint_every=5)
    running = []

    def mid_epoch() -> bool:
        r = svc.client.get(f"/jobs/{job_id}/curves").json()["running"]
        if r is not None:
            running.append(r)
        return bool(running) or svc.job(job_id)["state"] != "running"

    wait_for(mid_epoch, "a checkpoint inside an epoch", timeout=60)
    svc.client.post(f"/jobs/{job_id}/cancel")
    svc.wait(job_id, timeout=60)
    assert running, "the job ended before a checkpoint inside an epoch was seen"
    point = running[0]
    assert point["step"] % 5 == 0
    assert point["train_loss"] >= 0
    assert 0 <= point["train_accuracy"] <= 1


# -- Prometheus -------------------------------------------------------------------------------
def test_metrics_label_a_job_by_job_id_and_pass_promtool(service) -> None:
    """Prometheus's own ``job`` label would rename ours ``exported_job``: it is ``job_id``."""
    svc = service()
    job_id = svc.submit(**LONG)
    svc.wait(job_id, lambda j: j["step"] >= 1)
    text = svc.client.get("/metrics").text
    svc.client.post(f"/jobs/{job_id}/cancel")
    assert f'otpnn_job_step{{job_id="{job_id}"}}' in text
    assert not re.search(r'[{,]job="', text)
    svc.wait(job_id, timeout=60)
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian's prometheus package); label checked only")
    check = subprocess.run(
        [promtool, "check", "metrics"], input=text, capture_output=True, text=True, check=False
    )
    assert check.returncode == 0, check.stdout + check.stderr
