"""The dashboard in a real browser: Debian's headless Chromium driven by Playwright (no browser
download). A person's path through the page: submit, watch, kill a worker, cancel, log in.

Screenshots go to ``test-artifacts/`` (gitignored) at the repository's root.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from otpnn.config import TrainConfig
from otpnn.data import synthetic_dataset
from otpnn.reference import train_reference

playwright_api = pytest.importorskip("playwright.sync_api", reason="playwright not installed")

CHROMIUM = Path("/usr/bin/chromium")
ARTIFACTS = Path(__file__).resolve().parents[3] / "test-artifacts"
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
TOKEN = "s3cret-token-for-the-dashboard"
# Long enough to act on while it runs (~2,500 steps; seconds here, longer under load, and then
# the page acts later too), small enough to check against the serial reference.
LONG = {
    "dataset": "synthetic",
    "synthetic_train": 8192,
    "synthetic_test": 256,
    "epochs": 20,
    "batch_size": 64,
    "seed": 3,
    "workers": 2,
    "backend": "process",
}

pytestmark = [pytest.mark.slow, pytest.mark.browser, pytest.mark.timeout(300)]


def fault_free_sha(config: dict[str, Any]) -> str:
    """The serial reference's checksum for a job's config (as the service recorded it)."""
    cfg = TrainConfig.from_dict(config)
    dataset = synthetic_dataset(cfg.seed, cfg.synthetic_train, cfg.synthetic_test)
    return train_reference(cfg, dataset).params_sha256


@pytest.fixture
def browser(service) -> Iterator[Callable[[str], Any]]:
    """open(url) -> a Playwright page in headless Chromium; console messages kept on
    ``page.console``. Depends on ``service`` so that the browser closes first."""
    if not CHROMIUM.is_file():
        pytest.skip(f"{CHROMIUM} not found (Debian's chromium package; .ci/run installs it)")
    ARTIFACTS.mkdir(exist_ok=True)
    with playwright_api.sync_playwright() as p:
        chromium = p.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        pages = []

        def open_page(url: str) -> Any:
            page = chromium.new_page(viewport={"width": 1280, "height": 1000})
            page.console = []
            page.on("console", lambda m: page.console.append(m.text))
            page.on("pageerror", lambda e: page.console.append(f"pageerror: {e}"))
            page.set_default_timeout(60_000)
            page.goto(url)
            pages.append(page)
            return page

        try:
            yield open_page
        finally:
            for page in pages:
                blocked = [m for m in page.console if "Content Security Policy" in m]
                assert not blocked, blocked  # the page itself never trips its own policy
                assert not [m for m in page.console if m.startswith("pageerror")]
            chromium.close()


def shot(page: Any, name: str) -> None:
    page.screenshot(path=str(ARTIFACTS / f"{name}.png"), full_page=True)


def row(page: Any, job_id: str) -> Any:
    return page.locator(f'#jobs tr[data-job="{job_id}"]')


def step_shown(page: Any, job_id: str) -> int:
    return int(row(page, job_id).get_attribute("data-step"))


def wait_until(page: Any, condition: Callable[[], bool], what: str, timeout: float = 60) -> None:
    """Poll from Python: the page's CSP forbids the eval that ``wait_for_function`` uses."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        page.wait_for_timeout(50)


def test_the_page_lists_a_submitted_job_and_its_progress_moves(service, browser) -> None:
    svc = service()
    page = browser(svc.url)
    page.select_option("#field-dataset", "synthetic")
    page.fill("#field-synthetic_train", str(LONG["synthetic_train"]))
    page.fill("#field-epochs", "3")
    page.fill("#field-workers", "2")
    page.click("#submit-form button[type=submit]")
    page.wait_for_selector("#jobs tbody tr")
    (job_id,) = [j["id"] for j in svc.client.get("/jobs").json()]
    assert row(page, job_id).count() == 1
    wait_until(page, lambda: step_shown(page, job_id) > 0, "the first steps")
    first = step_shown(page, job_id)
    wait_until(page, lambda: step_shown(page, job_id) > first, "the progress to move")
    shot(page, "dashboard-progress")
    page.wait_for_selector(f'#jobs tr[data-job="{job_id}"][data-state="succeeded"]')
    assert step_shown(page, job_id) == svc.job(job_id)["total_steps"]
    assert page.locator("#curves").get_attribute("data-epochs") == "3"
    # The model download from the page is the service's file.
    with page.expect_download() as download:
        row(page, job_id).get_by_role("button", name="model").click()
    saved = Path(download.value.path()).read_bytes()
    assert saved == svc.client.get(f"/jobs/{job_id}/model").content


def test_the_jobs_table_names_each_jobs_algorithm(service, browser) -> None:
    svc = service()
    expected = {
        svc.submit(algorithm="async", staleness=3): "async SGD, staleness 3",
        svc.submit(algorithm="local-sgd", sync_every=4): "local SGD, averaged every 4 steps",
        svc.submit(): "synchronous SGD",
    }
    page = browser(svc.url)
    for job_id, text in expected.items():
        network = row(page, job_id).locator("td").nth(2)
        network.wait_for()
        assert f"; {text}: lr " in network.get_attribute("title")


def test_a_kill_from_the_page_restarts_worker_0_and_the_checksum_holds(service, browser) -> None:
    svc = service()
    job_id = svc.submit(**LONG)
    page = browser(f"{svc.url}/#job={job_id}")
    worker = page.locator('#tree g[data-id="worker-0"]')
    worker.wait_for()
    pid_before = worker.get_attribute("data-pid")
    assert worker.get_attribute("data-restarts") == "0"
    page.select_option("#fault-kind", "kill")
    page.select_option("#fault-target", "worker=0")
    page.select_option("#fault-when", "step")
    page.click("#fault-form button[type=submit]")
    page.wait_for_selector('#tree g[data-id="worker-0"][data-restarts="1"]')
    assert "restarted" in worker.get_attribute("class")  # the node visibly changes
    assert worker.get_attribute("data-pid") not in ("", pid_before)
    assert worker.get_attribute("data-state") == "running"
    assert "KilledBySignal" in worker.locator("title").text_content()  # its last exit reason
    page.wait_for_selector('#timeline li[data-kind="restart"][data-actor="worker-0"]')
    page.wait_for_selector('#timeline li[data-kind="recovered"]')
    assert page.inner_text("#fault-message").startswith("planned: kill:worker=0@step=")
    shot(page, "dashboard-restart")
    page.wait_for_selector(f'#jobs tr[data-job="{job_id}"][data-state="succeeded"]')
    status = svc.job(job_id)
    assert status["restarts_by_actor"] == {"worker-0": 1}
    assert status["final"]["params_sha256"] == fault_free_sha(status["config"])


def test_cancel_from_the_page(service, browser) -> None:
    svc = service()
    job_id = svc.submit(**LONG)
    page = browser(svc.url)
    row(page, job_id).wait_for()
    wait_until(page, lambda: step_shown(page, job_id) > 0, "the first steps")
    row(page, job_id).get_by_role("button", name="cancel").click()
    page.wait_for_selector(f'#jobs tr[data-job="{job_id}"][data-state="cancelled"]')
    status = svc.job(job_id)
    assert status["state"] == "cancelled"
    assert status["step"] < status["total_steps"]


def test_with_a_token_a_wrong_one_sees_no_job_data(service, browser) -> None:
    svc = service(token=TOKEN)
    auth = {"Authorization": f"Bearer {TOKEN}"}
    job_id = httpx.post(f"{svc.url}/jobs", json={"dataset": "synthetic"}, headers=auth).json()["id"]
    page = browser(svc.url)
    urls: list[str] = []
    page.on("request", lambda r: urls.append(r.url))
    page.wait_for_selector("#login-form")
    assert page.locator("#main").is_hidden()
    page.fill("#token", "not-the-token-at-all")
    page.click("#login-form button")
    page.wait_for_selector("#login-message:has-text('Wrong token')")
    assert page.locator("#login").is_visible()
    assert job_id not in page.content()
    shot(page, "dashboard-wrong-token")
    page.fill("#token", TOKEN)
    page.click("#login-form button")
    row(page, job_id).wait_for()  # the right one does see it: the check above could fail
    assert TOKEN not in page.content()
    assert not [u for u in urls if TOKEN in u]  # never in a URL
    httpx.post(f"{svc.url}/jobs/{job_id}/cancel", headers=auth)


def test_the_submit_form_shows_the_services_validation_message(service, browser) -> None:
    svc = service()
    page = browser(svc.url)
    page.select_option("#field-dataset", "synthetic")
    page.fill("#field-epochs", "0")
    with page.expect_response(re.compile(r"/jobs$")) as answer:
        page.click("#submit-form button[type=submit]")
    body = answer.value.request.post_data_json
    expected = svc.client.post("/jobs", json=body).json()  # the same request, from a script
    assert expected["error"].startswith("invalid request: epochs:")
    page.wait_for_selector("#submit-message.error")
    assert page.inner_text("#submit-message") == expected["error"]
    problem = expected["detail"][0]["problem"]
    assert page.inner_text("#problem-epochs") == problem
    assert page.get_attribute("#field-epochs", "aria-invalid") == "true"
    shot(page, "dashboard-validation")
    assert svc.client.get("/jobs").json() == []


def test_the_policy_blocks_an_inline_script(service, browser) -> None:
    svc = service()
    page = browser(svc.url)
    page.wait_for_selector("#jobs")
    with pytest.raises(playwright_api.Error):
        page.add_script_tag(content="window.inlineRan = true;")
    assert page.evaluate("window.inlineRan === undefined")
    page.console.clear()  # the violation just provoked is the one expected
