"""ops/grafana/genq-dashboard.json asks only for metrics genq exports: every metric name in every
panel's PromQL is one of the real registries' (the worker's WorkerHealth, the API's
api.metrics), built here; no list of names is written down in this test."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from pathlib import Path

from prometheus_client import CollectorRegistry

from api import metrics as api_metrics
from worker.health import WorkerHealth
from worker.host.metrics import WorkerMetrics

DASHBOARD = Path(__file__).parents[2] / "ops" / "grafana" / "genq-dashboard.json"

# PromQL words that are not metric names: aggregation modifiers, set and vector matching.
KEYWORDS = {"by", "without", "on", "ignoring", "group_left", "group_right", "bool", "offset"}
KEYWORDS |= {"and", "or", "unless"}
NAME = re.compile(r"[a-zA-Z_:][a-zA-Z0-9_:]*")


def metric_names(expr: str) -> set[str]:
    """The metric names a PromQL expression selects, histogram suffixes stripped."""
    expr = re.sub(r'"(?:[^"\\]|\\.)*"', "", expr)  # strings
    expr = re.sub(r"\{[^}]*\}", "", expr)  # label matchers
    expr = re.sub(r"\[[^\]]*\]", "", expr)  # ranges
    expr = re.sub(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)", "", expr)
    names = set()
    for match in NAME.finditer(expr):
        word, after = match.group(), expr[match.end() :].lstrip()
        if word in KEYWORDS or after.startswith("(") or expr[: match.start()].endswith("$"):
            continue  # a keyword, a function, a Grafana variable
        if re.fullmatch(r"[0-9.e]+", word):
            continue
        names.add(re.sub(r"_(bucket|sum|count)$", "", word))
    return names


def exported() -> set[str]:
    """Every name the registries serve: families, their samples, counters with ``_total``."""
    api = CollectorRegistry()
    api.register(api_metrics.QueueDepths({"a-queue": 0}, 0))  # the gauges read at scrape time
    engine_host = CollectorRegistry()  # the worker's engine host (worker.host.main)
    WorkerMetrics(engine_host)
    names = set()
    for registry in (WorkerHealth().registry, engine_host, api_metrics.REGISTRY, api):
        for family in registry.collect():
            names.add(family.name)
            names.update(s.name for s in family.samples)
            if family.type == "counter":
                names.add(family.name + "_total")
    return names


def panels(node: dict) -> Iterator[dict]:
    for panel in node.get("panels", ()):
        yield panel
        yield from panels(panel)


def test_every_panel_queries_metrics_genq_exports() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    assert dashboard["description"]
    known = exported()
    queried = set()
    for panel in panels(dashboard):
        if panel["type"] == "row":
            continue
        assert panel["datasource"]["type"] == "prometheus", panel["title"]
        assert panel["targets"], panel["title"]
        for target in panel["targets"]:
            names = metric_names(target["expr"])
            assert names, f"{panel['title']}: no metric in {target['expr']!r}"
            assert names <= known, f"{panel['title']}: not exported: {names - known}"
            queried |= names
    # What the dashboard is for: queue depth, throughput, TTFT and latency, warm workers, KV cache.
    for family in (
        "genq_jobs_waiting",
        "genq_output_tokens_total",
        "genq_time_to_first_token_seconds",
        "genq_job_duration_seconds",
        "genq_worker_ready",
        "genq_kv_cache_usage_ratio",
        "genq_api_request_duration_seconds",
    ):
        assert family in queried


def test_the_extraction_finds_names_and_skips_the_rest() -> None:
    expr = (
        'histogram_quantile(0.95, sum by (le, route) (rate(x_seconds_bucket{a="b(c)"}[$__rate_'
        "interval]))) / clamp_min(sum(rate(y_total[5m])), 0.001) and on(instance) z"
    )
    assert metric_names(expr) == {"x_seconds", "y_total", "z"}
