"""Flower in a real browser, on the real stack: `genq flower` behind basic auth, a worker that
appears only once warm, jobs shown as readable one-liners with no secret, the worker's start-up
phases on its page, and task history kept across a restart (--persistent). Headless Chromium is
Debian's (`/usr/bin/chromium`, `make browser`), driven by Playwright's Python package; no browser
is downloaded. The screenshots go to docs/img/ for the README.
"""

from __future__ import annotations

import os
import threading
import time
from pathlib import Path

import httpx
import pytest

from genq.store.embedded import free_port
from tests.e2e.conftest import Stack, start_role, stop_role, wait_for_job, wait_until

CHROMIUM = Path("/usr/bin/chromium")
SCREENSHOTS = Path(__file__).resolve().parents[2] / "docs" / "img"
USER, PASSWORD = "genq", "flower-e2e"
# In a webhook URL's query: it must show nowhere in Flower.
SECRET = "tok-must-not-show-in-flower"

pytestmark = [
    pytest.mark.engine,
    pytest.mark.timeout(900),  # a second worker's cold start, then the browser
    pytest.mark.skipif(
        not CHROMIUM.exists(),
        reason="no /usr/bin/chromium: `make browser` installs Debian's chromium (as root, apt)",
    ),
]
sync_api = pytest.importorskip(
    "playwright.sync_api", reason="Playwright's Python package is not installed (test extra)"
)


class Flower:
    def __init__(self, stack: Stack, data_dir: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.env = stack.env | {
            "GENQ_FLOWER_PORT": str(self.port),
            "GENQ_FLOWER_BASIC_AUTH": f"{USER}:{PASSWORD}",
            "GENQ_DATA_DIR": str(data_dir),
        }
        self.logs = stack.logs
        self.process = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        self.process = start_role("flower", self.env, self.logs / f"flower-{self.starts}.log")
        wait_until(
            lambda: httpx.get(f"{self.url}/healthcheck").status_code == 200,
            30,
            f"Flower up (logs: {self.logs})",
            self.process,
        )

    def stop(self) -> None:
        if self.process is not None:
            stop_role(self.process)

    def get(self, path: str, **params: object) -> httpx.Response:
        return httpx.get(f"{self.url}{path}", params=params, auth=(USER, PASSWORD), timeout=10)

    def dashboard_workers(self) -> set[str]:
        """The workers Flower's dashboard lists (what it learned from Celery's events)."""
        return {w["hostname"] for w in self.get("/workers", json=1).json()["data"]}

    def tasks(self) -> dict[str, dict]:
        return self.get("/api/tasks").json()


@pytest.fixture
def flower(stack: Stack, tmp_path: Path):
    flower = Flower(stack, tmp_path / "data")
    yield flower
    flower.stop()


@pytest.fixture
def browser():
    with sync_api.sync_playwright() as playwright:
        browser = playwright.chromium.launch(executable_path=str(CHROMIUM))
        yield browser
        browser.close()


def _watch_a_worker_warm_up(
    stack: Stack, flower: Flower, name: str
) -> list[tuple[float, float, bool]]:
    """Start a worker named ``name`` and ask Flower all along whether it lists it; returns
    (unix time asked, unix time answered, listed) until it does. An answer is judged by when it
    came: one asked before the worker was warm may rightly list it if it came after."""
    failure: list[BaseException] = []

    def start() -> None:
        try:
            stack.start_worker(name)
        except BaseException as exc:  # noqa: BLE001 - re-raised in the test's thread
            failure.append(exc)

    starter = threading.Thread(target=start, name="start-worker")
    starter.start()
    seen: list[tuple[float, float, bool]] = []
    deadline = time.monotonic() + 600
    while time.monotonic() < deadline and not failure:
        asked = time.time()
        listed = name in flower.dashboard_workers()
        # Flower's API asks the workers (Celery's inspect, one broadcast per method, a second
        # each): a warming one does not answer.
        listed |= name in flower.get("/api/workers", refresh=1).json()
        seen.append((asked, time.time(), listed))
        if listed and not starter.is_alive():
            break
        time.sleep(0.5)
    starter.join(timeout=300)
    if failure:
        raise failure[0]
    return seen


def _row(page, table: str, *texts: str) -> str:
    """The text of the row of ``table`` that contains every one of ``texts``, waited for."""
    row = page.locator(f"{table} tbody tr")
    for text in texts:
        row = row.filter(has_text=text)
    row.first.wait_for(timeout=20_000)
    return row.first.inner_text()


def test_flower_shows_warm_workers_and_readable_jobs(stack: Stack, flower: Flower, browser):
    # A fresh worker, started while Flower watches: the stack's warm one goes first, so that the
    # dashboard shows only the worker this test saw start.
    if stack.worker is not None:
        stop_role(stack.worker)
    flower.start()
    assert httpx.get(f"{flower.url}/").status_code == 401  # basic auth...
    assert httpx.get(f"{flower.url}/api/tasks").status_code == 401
    assert httpx.get(f"{flower.url}/metrics").status_code == 200  # ...but not for Prometheus

    name = f"genq-flower-{os.getpid()}@localhost"
    seen = _watch_a_worker_warm_up(stack, flower, name)
    info = stack.worker_info()
    warm_at, warmup_s = info["ready_at"], info["startup_s"]["warmup"]
    before_warm = [listed for _, answered, listed in seen if answered < warm_at]
    assert not any(before_warm), "Flower listed the worker before its engine was warm"
    # Flower was asked all through the engine's start and warm-up, not only around the end.
    assert seen[0][0] < warm_at - warmup_s - info["startup_s"].get("engine", 0)
    assert len(before_warm) >= 10
    assert seen[-1][2], "Flower never listed the warm worker"

    jobs = {
        "short": (
            {"prompt": "What is the capital of France?", "max_tokens": 16},
            '"What is the capital of France?" (max_tokens 16)',
        ),
        "long": (
            {
                "prompt": "Write a short story about a lighthouse keeper who finds a message "
                "in a bottle.",
                "max_tokens": 24,
                "webhook": f"http://127.0.0.1:9/hook?token={SECRET}",
                "metadata": {"customer": SECRET},
            },
            '"Write a short story about a lighthouse …" (max_tokens 24)',
        ),
        "chat": (
            {
                "messages": [
                    {"role": "system", "content": "You answer with one word."},
                    {"role": "user", "content": "What colour is the sky?"},
                ],
                "max_tokens": 8,
            },
            'chat of 2, last "What colour is the sky?" (max_tokens 8)',
        ),
    }
    expected: dict[str, str] = {}
    for body, shown in jobs.values():
        response = httpx.post(f"{stack.api}/v1/jobs", json=body)
        assert response.status_code == 202, response.text
        job_id = response.json()["id"]
        expected[job_id] = f"job {job_id[:8]}… {shown}"
    for job_id in expected:
        assert wait_for_job(stack.api, job_id)["status"] == "succeeded"

    def all_succeeded() -> dict[str, dict] | None:
        tasks = flower.tasks()
        done = {i: tasks[i] for i in expected if tasks.get(i, {}).get("state") == "SUCCESS"}
        return tasks if len(done) == len(expected) else None

    tasks = wait_until(all_succeeded, 30, "Flower saw every job succeed")
    for job_id, shown in expected.items():
        assert tasks[job_id]["name"] == "genq.generate"
        assert tasks[job_id]["args"] == shown
        assert tasks[job_id]["worker"] == name
    assert SECRET not in flower.get("/api/tasks").text

    context = browser.new_context(
        http_credentials={"username": USER, "password": PASSWORD},
        viewport={"width": 1440, "height": 900},
    )
    page = context.new_page()
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)

    page.goto(f"{flower.url}/", wait_until="networkidle")
    row = _row(page, "#workers-table", name)
    assert "True" in row or "Online" in row, row  # its status
    page.screenshot(path=SCREENSHOTS / "flower-workers.png")

    page.set_viewport_size({"width": 1920, "height": 900})  # every column, arguments whole
    page.goto(f"{flower.url}/tasks", wait_until="networkidle")
    for job_id, shown in expected.items():
        # (a webhook task of the job names it too, in its own arguments)
        row = _row(page, "#tasks-table", "genq.generate", job_id)
        assert "SUCCESS" in row and shown in row, row
    assert SECRET not in page.content()
    page.screenshot(path=SCREENSHOTS / "flower-tasks.png")
    page.set_viewport_size({"width": 1440, "height": 900})

    # The worker's page: Celery's inspect stats, where genq's pool adds its start-up phases
    # and warm-up (worker/pool.py); Flower writes "genq-startup-s" as "Genq startup s".
    page.goto(f"{flower.url}/worker/{name}", wait_until="networkidle")
    pool = page.locator("#tab-pool").inner_text()
    assert "Genq startup s" in pool and "Genq warm up" in pool, pool
    for phase in ("model", "engine", "warmup", "total"):
        assert f"{phase} {info['startup_s'][phase]:g}" in pool, (phase, pool)
    assert f"{info['warmup_steps'][0]['name']}: " in pool, pool
    page.screenshot(path=SCREENSHOTS / "flower-worker.png")
    context.close()

    # --persistent: a restarted Flower still has the task history (saved at its exit).
    flower.stop()
    flower.start()
    restored = flower.tasks()
    assert {i: restored[i]["args"] for i in expected} == expected
