"""The tables of ops/bench/cold_start.py's JSON: ``python ops/bench/report_cold_start.py FILE``."""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

COLUMNS = ("bare_cold", "genq_cold", "genq_cached", "genq_no_warmup", "bare_cached")
PHASES = (
    ("process", "process start (interpreter, imports before genq/vLLM)"),
    ("model", "find the model"),
    ("imports", "import vLLM"),
    ("engine", "engine construction"),
    ("vllm_core_process", "  engine config + engine-core process up"),
    ("vllm_worker_process", "  executor's worker process up"),
    ("vllm_weights", "  weights load"),
    ("vllm_model_load", "  model load (incl. weights)"),
    ("vllm_profile_run", "  profiling run"),
    ("vllm_compile", "  torch.compile"),
    ("vllm_cuda_graphs", "  CUDA-graph capture"),
    ("vllm_init_engine", "  profile + KV cache + compile + graphs (vLLM's total)"),
    ("warmup", "genq warm-up"),
    ("total", "total: process start -> ready"),
)


def _phases(run: dict) -> dict[str, float]:
    return run["phases"] if "phases" in run else run["worker"]["startup_s"]


def _ready_minus_warmup(run: dict) -> float:
    phases = _phases(run)
    return phases["total"] - phases.get("warmup", 0.0)


def phase_table(runs: dict[str, Any]) -> str:
    cols = [c for c in COLUMNS if c in runs]
    lines = [
        "| phase (s) | " + " | ".join(c.replace("_", " ") for c in cols) + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for key, label in PHASES:
        cells = [_phases(runs[c]).get(key) for c in cols]
        if all(v is None for v in cells):
            continue
        lines.append(
            f"| {label} | " + " | ".join("-" if v is None else f"{v:.2f}" for v in cells) + " |"
        )
    lines.append(
        "| total - warm-up | "
        + " | ".join(f"{_ready_minus_warmup(runs[c]):.2f}" for c in cols)
        + " |"
    )
    return "\n".join(lines)


def verdicts(runs: dict[str, Any]) -> list[str]:
    out = []
    for genq, bare in (("genq_cold", "bare_cold"), ("genq_cached", "bare_cached")):
        if genq in runs and bare in runs:
            ratio = _ready_minus_warmup(runs[genq]) / _phases(runs[bare])["total"]
            out.append(
                f"- {genq}: time to ready without its warm-up = {ratio:.2f}x the bare LLM(...) "
                f"({bare}); goal <= 1.1x"
            )
    if "genq_cold" in runs and "genq_cached" in runs:
        cold, cached = (_phases(runs[r])["total"] for r in ("genq_cold", "genq_cached"))
        out.append(
            f"- cached restart: {cached:.1f} s vs {cold:.1f} s cold to ready, "
            f"{(1 - cached / cold) * 100:.0f}% shorter; goal >= 40%"
        )
    return out


def _cell(shape: dict | None) -> str:
    if shape is None:
        return "-"
    median = statistics.median(shape["rest_ms"])
    return f"{shape['first_ms']:.0f} / {median:.0f} = {shape['first_ms'] / median:.2f}x"


def penalty_table(runs: dict[str, Any]) -> str:
    cols = [c for c in COLUMNS if c in runs and "probe" in runs[c]]
    shapes = list(dict.fromkeys(s for c in cols for s in runs[c]["probe"]))
    lines = [
        "| first job of the shape / median of the next, ms | "
        + " | ".join(c.replace("_", " ") for c in cols)
        + " |",
        "|---|" + "---:|" * len(cols),
    ]
    for shape in shapes:
        cells = [_cell(runs[c]["probe"].get(shape)) for c in cols]
        lines.append(f"| {shape.replace('_', ' ')} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def parts_table(runs: dict[str, Any], shape: str = "short") -> str:
    """Where the first job's time went, beside the median of the next ones (ms)."""
    names = ("accept", "queue", "to_engine", "engine", "back")
    lines = [
        f"| {shape.replace('_', ' ')} (a batch: the median job), ms | " + " | ".join(names) + " |",
        "|---|" + "---:|" * len(names),
    ]
    for run_name in COLUMNS:
        probe = runs.get(run_name, {}).get("probe", {}).get(shape, {})
        if "first_parts" not in probe:
            continue
        first = probe["first_parts"]
        rest = {n: statistics.median(p[n] for p in probe["rest_parts"]) for n in names}
        label = run_name.replace("_", " ")
        lines.append(f"| {label}: first | " + " | ".join(f"{first[n]:.1f}" for n in names) + " |")
        lines.append(
            f"| {label}: median of the next | " + " | ".join(f"{rest[n]:.1f}" for n in names) + " |"
        )
    return "\n".join(lines)


def prequeued_table(runs: dict[str, Any]) -> str:
    lines = [
        "| run | a job queued before start: consumed after ready, ms | its engine time, ms "
        "| median engine time of the next short jobs, ms | its run (claim -> stored), ms "
        "| first batch |",
        "|---|---:|---:|---:|---:|---|",
    ]
    for name in COLUMNS:
        run = runs.get(name)
        if run is None or "prequeued" not in run:
            continue
        q = run["prequeued"]
        rest = statistics.median(run["probe"]["short"]["rest_engine_ms"])
        lines.append(
            f"| {name.replace('_', ' ')} | {q['consumed_after_ready_ms']:.0f} "
            f"| {q['engine_ms']:.0f} | {rest:.0f} | {q['run_ms']:.0f} | {q['first_batch']} |"
        )
    return "\n".join(lines)


def render(result: dict[str, Any]) -> str:
    runs = result.get("runs", {})
    meta = result.get("meta", {})
    parts = [
        f"{meta.get('date')} on {meta.get('gpu') or meta.get('machine')}; model {meta.get('model')}",
        "",
        "Time to ready, by phase",
        phase_table(runs),
        "",
        *verdicts(runs),
        "",
        "First-job penalty (client latency through POST /generate; bare: LLM.chat)",
        penalty_table(runs),
        "",
        "Where the time went (accept: client -> API stored it; queue: -> a worker claimed it; "
        "to_engine: the worker's own claim/store; engine; back: stored -> client has it)",
        parts_table(runs),
        "",
        parts_table(runs, f"batch_{meta.get('args', {}).get('batch', 32)}"),
        "",
        prequeued_table(runs),
    ]
    return "\n".join(parts)


if __name__ == "__main__":
    print(render(json.loads(Path(sys.argv[1]).read_text())))
