"""The Grafana dashboard against a real Prometheus: Debian's server (`make prometheus`) scrapes the
running stack's API and worker every second while a few jobs run, then every query of every panel
of ops/grafana/genq-dashboard.json is evaluated by it: each must be valid PromQL on names the
stack serves, and each must have data, since the test's traffic touches everything the dashboard
charts. promtool checks the compose stack's ops/prometheus/prometheus.yml.
"""

from __future__ import annotations

import json
import math
import re
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest

from genq.store.embedded import free_port
from tests.e2e.conftest import Stack, wait_for_job, wait_until

PROMETHEUS = Path("/usr/bin/prometheus")
PROMTOOL = Path("/usr/bin/promtool")
REPO = Path(__file__).resolve().parents[2]
DASHBOARD = REPO / "ops" / "grafana" / "genq-dashboard.json"
SCRAPE_INTERVAL_S = 1

needs_prometheus = pytest.mark.skipif(
    not PROMETHEUS.exists(),
    reason="no /usr/bin/prometheus: `make prometheus` installs Debian's prometheus (as root, apt)",
)


def test_promtool_accepts_the_compose_scrape_config() -> None:
    if not PROMTOOL.exists():
        pytest.skip("no /usr/bin/promtool: `make prometheus` installs it (as root, apt)")
    config = REPO / "ops" / "prometheus" / "prometheus.yml"
    check = subprocess.run(
        [PROMTOOL, "check", "config", config], capture_output=True, text=True, timeout=60
    )
    assert check.returncode == 0, check.stdout + check.stderr


class Prometheus:
    """A Prometheus server of its own: config and storage under a test's directory, on a free
    loopback port."""

    def __init__(self, directory: Path, targets: dict[str, str]) -> None:
        self.url = f"http://127.0.0.1:{free_port()}"
        self.config = directory / "prometheus.yml"
        self.log = directory / "prometheus.log"
        jobs = [
            {"job_name": job, "static_configs": [{"targets": [urlsplit(url).netloc]}]}
            for job, url in targets.items()
        ]
        config = {"global": {"scrape_interval": f"{SCRAPE_INTERVAL_S}s"}, "scrape_configs": jobs}
        self.config.write_text(json.dumps(config))  # YAML is a superset of JSON
        self.storage = directory / "tsdb"
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                [
                    PROMETHEUS,
                    f"--config.file={self.config}",
                    f"--storage.tsdb.path={self.storage}",
                    f"--web.listen-address={urlsplit(self.url).netloc}",
                ],
                stdin=subprocess.DEVNULL,
                stdout=out,
                stderr=subprocess.STDOUT,
            )
        ready = lambda: httpx.get(f"{self.url}/-/ready").status_code == 200  # noqa: E731
        wait_until(ready, 60, f"Prometheus ready (log: {self.log})", self.process)

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(10)

    def query(self, expr: str, at: float) -> dict:
        response = httpx.get(f"{self.url}/api/v1/query", params={"query": expr, "time": at})
        body = response.json()
        assert response.status_code == 200 and body["status"] == "success", f"{expr}: {body}"
        return body["data"]

    def targets_up(self) -> bool:
        active = httpx.get(f"{self.url}/api/v1/targets").json()["data"]["activeTargets"]
        return len(active) == 2 and all(t["health"] == "up" for t in active)

    def samples_since(self, since: float) -> float:
        """The fewest samples any target has given since ``since`` (unix time)."""
        window = max(1, int(time.time() - since))
        result = self.query(f"count_over_time(up[{window}s])", time.time())["result"]
        return min((float(r["value"][1]) for r in result), default=0)


def targets(dashboard: dict) -> list[tuple[str, str]]:
    """(panel title, PromQL) for every query of every panel, rows' nested panels included."""

    def panels(node: dict):
        for panel in node.get("panels", ()):
            yield panel
            yield from panels(panel)

    return [(p["title"], t["expr"]) for p in panels(dashboard) for t in p.get("targets", ())]


def grafana_variables(dashboard: dict, window_s: int) -> dict[str, str]:
    """What Grafana would put in for each variable a query may use, over a time range of
    ``window_s`` seconds that holds the test's jobs (Grafana's own $__rate_interval is at least
    four scrape intervals; here it spans the jobs, so that the rates see their counts move)."""
    values = {
        "__rate_interval": f"{window_s}s",
        "__interval": f"{SCRAPE_INTERVAL_S}s",
        "__interval_ms": str(SCRAPE_INTERVAL_S * 1000),
        "__range": f"{window_s}s",
        "__range_s": str(window_s),
        "__range_ms": str(window_s * 1000),
    }
    for variable in dashboard.get("templating", {}).get("list", ()):
        # A datasource variable picks the datasource (panels' "datasource" fields), never a
        # query's text; any other kind would need a value here: the test stops at it below.
        if variable["type"] == "datasource":
            values[variable["name"]] = "prometheus"
    return values


def substitute(expr: str, values: dict[str, str]) -> str:
    def one(match: re.Match[str]) -> str:
        name = match.group(1) or match.group(2)
        assert name in values, f"{expr}: no value for the dashboard variable ${name}"
        return values[name]

    return re.sub(r"\$\{(\w+)\}|\$(\w+)", one, expr)


# A chart of per-second rates: `sum(rate(...))`, `sum by (...) (rate(...))`. Every counter the
# dashboard charts this way moves with the test's jobs (jobs ended, tokens, submissions, one
# rejection, requests), so over a window holding them each must be above zero somewhere.
RATE_CHART = re.compile(r"sum(\s+by\s*\([^)]*\))?\s*\(\s*rate\(")


@pytest.mark.engine
@pytest.mark.timeout(600)  # the stack's engine may start here, on 2 shared cores
@needs_prometheus
def test_every_dashboard_query_runs_on_prometheus_and_has_data(
    stack: Stack, tmp_path: Path
) -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    queries = targets(dashboard)
    assert queries, "the dashboard has no queries"
    prometheus = Prometheus(tmp_path, {"genq-api": stack.api, "genq-worker": stack.worker_http})
    try:
        prometheus.start()
        wait_until(prometheus.targets_up, 30, f"both targets scraped (log: {prometheus.log})")
        # Jobs while Prometheus watches: their counters move between its samples.
        before_jobs = time.time()
        with ThreadPoolExecutor(3) as pool:
            jobs = list(pool.map(lambda i: run_job(stack, i), range(3)))
        assert [j["status"] for j in jobs] == ["succeeded"] * 3
        rejected = httpx.post(f"{stack.api}/v1/jobs", json={"prompt": "x", "max_tokens": 0})
        assert rejected.status_code == 422  # the rejected-by-reason series
        after_jobs = time.time()
        wait_until(lambda: prometheus.samples_since(after_jobs) >= 5, 30, "5 samples after")
        assert prometheus.targets_up(), httpx.get(f"{prometheus.url}/api/v1/targets").text

        at = time.time()
        values = grafana_variables(dashboard, math.ceil(at - before_jobs) + 2)
        # Every query must have data: each charts either a gauge both processes always serve
        # (queue depth, warm workers, start-up, KV cache, engine requests, Redis up) or what the
        # jobs, their polls and the one rejection counted. One left empty by this traffic is a
        # dashboard bug (a wrong name or label), which is what this test is for.
        empty, no_value, flat = [], [], []
        for title, expr in queries:
            promql = substitute(expr, values)
            data = prometheus.query(promql, at)
            assert data["resultType"] == "vector", f"{title}: {promql}: {data}"
            numbers = [float(r["value"][1]) for r in data["result"]]
            finite = [n for n in numbers if math.isfinite(n)]
            if not numbers:
                empty.append(f"{title}: {promql}")
            elif not finite:  # e.g. histogram_quantile over a window with no observation
                no_value.append(f"{title}: {promql} = {numbers}")
            elif RATE_CHART.match(promql) and not any(n > 0 for n in finite):
                flat.append(f"{title}: {promql} = {numbers}")
        assert not empty, f"queries with no series: {empty}"
        assert not no_value, f"queries with no finite value: {no_value}"
        assert not flat, f"rates the jobs did not move: {flat}"
    finally:
        prometheus.stop()


def run_job(stack: Stack, i: int) -> dict:
    body = {"prompt": f"Count to {i + 3}:", "max_tokens": 16, "min_tokens": 16}
    response = httpx.post(f"{stack.api}/v1/jobs", json=body)
    assert response.status_code == 202, response.text
    return wait_for_job(stack.api, response.json()["id"])
