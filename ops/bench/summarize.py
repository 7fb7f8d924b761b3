"""Shrink benchmark results to one summary file for docs/bench/: per-job lists become percentiles.

    .venv/bin/python ops/bench/summarize.py RUN.json [NAME=RUN2.json ...] --out docs/bench/TOPIC.json \
        [--about "what this is, and the command that made it"] [--text NAME=TABLE.txt ...]

A raw result (what bench.py, overhead.py, cold_start.py or scaleout.py write) keeps every job's
latency, span and token counts: hundreds of KB per run. docs/bench/ keeps one summary per topic
instead (tests/fast/test_docs_size.py holds it to that). Every list longer than ``KEEP`` items
becomes ``{"n", "min", "p50", "p90", "p95", "p99", "max", "mean"}`` if it holds numbers, or
``{"n", "omitted"}`` if not; everything else (rates, seconds, settings, start-up phases, host
summaries) stays as it was. The printed tables of each run go in beside it: the ``.txt`` next to
the run if there is one (``report.py`` output), and any ``--text`` file. The raw runs stay in git
history; report.py and plot.py read raw runs, not summaries.
"""

from __future__ import annotations

import argparse
import json
import statistics
from pathlib import Path
from typing import Any

KEEP = 16


def _pct(values: list[float], q: float) -> float:
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


def strip(value: Any) -> Any:
    """``value`` with every list longer than KEEP items replaced by what it summarizes."""
    if isinstance(value, dict):
        return {key: strip(item) for key, item in value.items()}
    if not isinstance(value, list):
        return value
    if len(value) <= KEEP:
        return [strip(item) for item in value]
    numbers = [v for v in value if isinstance(v, int | float) and not isinstance(v, bool)]
    if numbers and len(numbers) == sum(v is not None for v in value):
        ordered = sorted(numbers)
        return {
            "n": len(value),
            "min": ordered[0],
            **{f"p{q}": _pct(ordered, q) for q in (50, 90, 95, 99)},
            "max": ordered[-1],
            "mean": round(statistics.fmean(ordered), 6),
        }
    return {"n": len(value), "omitted": "per-item list (raw result in git history)"}


def _named(spec: str) -> tuple[str, Path]:
    name, sep, path = spec.partition("=")
    return (name, Path(path)) if sep else (Path(spec).stem, Path(spec))


def summarize(runs: list[str], about: str = "", texts: list[str] = ()) -> dict[str, Any]:
    out: dict[str, Any] = {"about": about, "runs": {}}
    for spec in runs:
        name, path = _named(spec)
        run: dict[str, Any] = {"source": str(path)}
        table = path.with_suffix(".txt")
        if table.is_file():
            run["table"] = table.read_text()
        run["result"] = strip(json.loads(path.read_text()))
        out["runs"][name] = run
    if texts:
        out["tables"] = {name: path.read_text() for name, path in map(_named, texts)}
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("runs", nargs="+", help="raw results, each PATH or NAME=PATH")
    p.add_argument("--out", type=Path, required=True)
    p.add_argument("--about", default="")
    p.add_argument("--text", action="append", default=[], help="NAME=FILE: a table to keep")
    args = p.parse_args()
    summary = summarize(args.runs, args.about, args.text)
    args.out.write_text(json.dumps(summary, indent=1, ensure_ascii=False) + "\n")
    print(f"{args.out}: {args.out.stat().st_size:,} bytes")


if __name__ == "__main__":
    main()
