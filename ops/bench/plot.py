"""PNG plots from a benchmark result (the JSON ops/bench/bench.py writes):

- ``<name>-throughput.png``: output tokens/s against concurrency, per system and workload, with
  the engine's offline limit as a line;
- ``<name>-latency-cdf.png``: the latency distribution of every system at the highest common
  concurrency of the fixed workload.

    .venv/bin/pip install '.[bench]'     # matplotlib
    .venv/bin/python ops/bench/plot.py cpu.json gpu-h200.json --out docs/img   # raw results
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
from report import SYSTEMS, tps  # noqa: E402

STYLE = {
    "engine": {"color": "tab:gray", "marker": "s"},
    "genq": {"color": "tab:blue", "marker": "o"},
    "vllm_serve": {"color": "tab:orange", "marker": "^"},
    "vllm_serve_plain": {"color": "tab:red", "marker": "v"},
}


def throughput(result: dict, title: str, out: Path) -> None:
    names = list(result["workloads"])
    fig, axes = plt.subplots(1, len(names), figsize=(6 * len(names), 4.5), squeeze=False)
    for ax, workload in zip(axes[0], names):
        limit = tps(result["offline"]["limit"][workload])
        ax.axhline(limit, color="black", linestyle="--", label="engine limit (offline)")
        for key, label in SYSTEMS:
            runs = sorted(
                (r for r in result.get(key, []) if r["workload"] == workload),
                key=lambda r: r["concurrency"],
            )
            if runs:
                ax.plot(
                    [r["concurrency"] for r in runs],
                    [tps(r) for r in runs],
                    label=label.replace("`", ""),
                    **STYLE[key],
                )
        ax.set_xscale("log", base=2)
        finish(ax, "requests in flight", "output tokens/s", f"{title}: {workload} workload")
    save(fig, out)


def latency_cdf(result: dict, title: str, out: Path) -> None:
    levels = [
        {r["concurrency"] for r in result.get(key, []) if r["workload"] == "fixed"}
        for key, _ in SYSTEMS
        if result.get(key)
    ]
    c = max(set.intersection(*levels))
    fig, ax = plt.subplots(figsize=(6.5, 4.5))
    for key, label in SYSTEMS:
        for r in result.get(key, []):
            if r["workload"] == "fixed" and r["concurrency"] == c:
                values = sorted(r["latency_s"])
                ax.plot(
                    values,
                    [(i + 1) / len(values) for i in range(len(values))],
                    label=label.replace("`", ""),
                    color=STYLE[key]["color"],
                )
    finish(
        ax,
        "request latency (s)",
        "fraction of requests",
        f"{title}: latency CDF, fixed workload, {c} in flight",
    )
    save(fig, out)


def finish(ax: plt.Axes, xlabel: str, ylabel: str, title: str) -> None:
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(title)
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)


def save(fig: plt.Figure, out: Path) -> None:
    fig.tight_layout()
    fig.savefig(out, dpi=110)
    plt.close(fig)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__)
    p.add_argument("results", nargs="+", type=Path)
    p.add_argument("--out", type=Path, default=Path("docs/img"))
    args = p.parse_args()
    args.out.mkdir(parents=True, exist_ok=True)
    for path in args.results:
        result = json.loads(path.read_text())
        title = result["meta"]["machine"].split(", ")[-1]
        if title == "no GPU":
            title = f"CPU ({result['meta']['machine'].split(', ')[1]})"
        throughput(result, title, args.out / f"{path.stem}-throughput.png")
        latency_cdf(result, title, args.out / f"{path.stem}-latency-cdf.png")
        print(f"wrote {args.out}/{path.stem}-*.png")


if __name__ == "__main__":
    main()
