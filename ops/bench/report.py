"""Tables from a benchmark result (the JSON ops/bench/bench.py writes).

.venv/bin/python ops/bench/report.py x.json     # prints the tables again (docs/bench/ keeps
                                                 # summaries, with their tables inside)
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

SYSTEMS = (
    ("engine", "engine alone, c in flight (AsyncLLM)"),
    ("genq", "genq (HTTP -> Redis -> worker)"),
    ("genq_openai", "genq's OpenAI front (streamed, through the queue)"),
    ("vllm_serve", "`vllm serve` (OpenAI API, streamed)"),
    ("vllm_serve_plain", "`vllm serve` (OpenAI API, not streamed)"),
)


def pct(values: list[float], q: float) -> float:
    values = sorted(v for v in values if v is not None)
    if not values:
        return float("nan")
    return values[min(len(values) - 1, round(q / 100 * (len(values) - 1)))]


def apart(run: dict) -> str:
    """A run with think time between a client's requests (bench.py --think-ms) says so."""
    return f", {run['think_ms']:g} ms apart" if run.get("think_ms") else ""


def _ms(values: list[float] | None, qs: tuple[int, ...], scale: float = 1000) -> str:
    if not values or all(v is None for v in values):  # e.g. no TTFT from an unstreamed answer
        return "-"
    return "/".join(f"{pct(values, q) * scale:.0f}" for q in qs)


def tps(run: dict) -> float:
    return run["output_tokens"] / run["seconds"]


def limit_of(result: dict[str, Any], workload: str) -> float | None:
    """The offline limit's tok/s for ``workload``; None in a run without it (``--systems``)."""
    limit = result.get("offline", {}).get("limit", {}).get(workload)
    return tps(limit) if limit else None


def ratio(value: float, limit_tps: float | None) -> str:
    return "-" if limit_tps is None else f"{value / limit_tps:.2f}"


def workload_table(result: dict[str, Any], workload: str) -> str:
    limit_tps = limit_of(result, workload)
    engine_at = {r["concurrency"]: r for r in result.get("engine", []) if r["workload"] == workload}
    lines = [
        "| system | conc. | jobs | out tok/s | x limit | x engine at c | jobs/s "
        "| latency p50/p95/p99 ms | TTFT p50/p95 ms | queue p50 ms | overhead p50/p99 ms |",
        "|" + "---|" * 11,
    ]
    if limit_tps is not None:
        limit = result["offline"]["limit"][workload]
        lines.append(
            f"| engine limit (offline `LLM.generate`, all at once) | all | {limit['jobs']} "
            f"| {limit_tps:.0f} | 1.00 | - | {limit['jobs'] / limit['seconds']:.2f} "
            "| - | - | - | - |"
        )
    if workload == "fixed" and limit_tps is not None:
        seed = result["offline"]["seed"]
        lines.append(
            f"| seed pattern (one blocking `generate` at a time) | 1 | {seed['jobs']} "
            f"| {tps(seed):.0f} | {tps(seed) / limit_tps:.2f} | - "
            f"| {seed['jobs'] / seed['seconds']:.2f} | {_ms(seed['latencies_s'], (50, 95, 99))} "
            "| - | - | - |"
        )
    levels = sorted({r["concurrency"] for key, _ in SYSTEMS for r in result.get(key, [])})
    for c in levels:
        for key, name in SYSTEMS:
            for r in result.get(key, []):
                if r["workload"] != workload or r["concurrency"] != c:
                    continue
                anchor = engine_at.get(c)
                vs_engine = f"{tps(r) / tps(anchor):.2f}" if anchor else "-"
                queue = f"{pct(r['queue_ms'], 50):.0f}" if r.get("queue_ms") else "-"
                lines.append(
                    f"| {name}{apart(r)} | {c} | {r['jobs']} | {tps(r):.0f} "
                    f"| {ratio(tps(r), limit_tps)} "
                    f"| {vs_engine} | {r['jobs'] / r['seconds']:.2f} "
                    f"| {_ms(r['latency_s'], (50, 95, 99))} | {_ms(r['ttft_s'], (50, 95))} "
                    f"| {queue} | {_ms(r.get('overhead_ms'), (50, 99), 1)} |"
                )
    return "\n".join(lines)


def steady_tps(run: dict) -> tuple[float, float] | None:
    """Output tok/s while all ``c`` requests were in flight: from the first answer to the last
    request sent, each job's tokens spread evenly over its time in flight as the client saw it
    (the same rule for every system). The whole run's rate also counts the start, when the
    first requests are still on their way, and the end, when fewer than c are left. Returns
    (tok/s, window seconds); None for runs recorded before spans were."""
    spans, tokens = run.get("span_s"), run.get("job_tokens")
    if not spans or not tokens:
        return None
    start, end = min(done for _, done in spans), max(sent for sent, _ in spans)
    if end <= start:
        return None
    counted = 0.0
    for (sent, done), n in zip(spans, tokens, strict=True):
        overlap = min(done, end) - max(sent, start)
        if overlap > 0:
            counted += n * overlap / (done - sent)
    return counted / (end - start), end - start


def wave_period_s(run: dict, batch: int) -> float | None:
    """Fixed-length jobs run in the engine in waves of ``batch`` (its ``max_num_seqs``) that
    start and end together once more jobs wait than it batches: the median time from one wave's
    middle completion to the next. It is the engine's own pace (decode steps and the next wave's
    prefill), with no queue or client in it: two systems on one engine config should match."""
    spans = run.get("span_s")
    if not spans or run["concurrency"] < 2 * batch:
        return None
    done = sorted(answered for _, answered in spans)
    middles = done[batch // 2 :: batch]
    gaps = [b - a for a, b in zip(middles, middles[1:])]
    return statistics.median(gaps) if len(gaps) >= 3 else None


ADMISSION_GAP_S = 0.010  # first tokens closer than this came from one engine step
ADMISSION_TRIM_S = 8.0  # the start and the end of a run, left out


def admissions(run: dict) -> tuple[float, int, int] | None:
    """How often new jobs joined the engine's batch: each job's first token (its send time plus
    its time to first token — genq's counts from the API's accept, so the send-to-accept time
    goes in between), first tokens less than 10 ms apart taken as one admission (one engine step
    that prefilled them beside the running decodes), over the run less 8 s at each end. Returns
    (admissions per second, jobs per admission p50, p90); None for a run without first tokens
    (not streamed) or too short. With fixed lengths a batch that stays in step admits once per
    wave; one out of step admits a few jobs many times a wave."""
    spans, ttfts = run.get("span_s"), run.get("ttft_s")
    if not spans or not ttfts or None in ttfts:
        return None
    accepted_ms = run.get("send_to_accept_ms") or [0.0] * len(spans)
    firsts = sorted(
        sent + accept / 1000 + ttft
        for (sent, _), accept, ttft in zip(spans, accepted_ms, ttfts, strict=True)
    )
    lo, hi = firsts[0] + ADMISSION_TRIM_S, firsts[-1] - ADMISSION_TRIM_S
    steady = [t for t in firsts if lo <= t <= hi]
    if hi <= lo or not steady:
        return None
    sizes = admission_sizes(steady, ADMISSION_GAP_S)
    return len(sizes) / (hi - lo), pct(sizes, 50), pct(sizes, 90)


def admission_sizes(firsts: list[float], gap_s: float) -> list[int]:
    """Sorted first-token times -> the number of jobs in each admission: first tokens less than
    ``gap_s`` apart came from one engine step."""
    sizes = [1] if firsts else []
    for before, t in zip(firsts, firsts[1:]):
        if t - before < gap_s:
            sizes[-1] += 1
        else:
            sizes.append(1)
    return sizes


def steady_table(result: dict[str, Any]) -> str:
    """Every closed-loop level's steady-state rate beside its whole-run rate; for the fixed
    workload at twice the engine's batch or more, the engine's wave period; and how often new
    jobs joined the batch, where first tokens were seen."""
    batch = json.loads(result["meta"]["args"].get("engine_args") or "{}").get("max_num_seqs")
    lines = [
        "| workload | system | conc. | whole run tok/s | x limit | steady tok/s (window s) "
        "| x limit | wave of max_num_seqs s | admissions/s (jobs each p50/p90) |",
        "|---|---|---|---|---|---|---|---|---|",
    ]
    for key, name in SYSTEMS:
        for r in result.get(key, []):
            if (steady := steady_tps(r)) is None:
                continue
            limit_tps = limit_of(result, r["workload"])
            wave = wave_period_s(r, batch) if batch and r["workload"] == "fixed" else None
            joined = admissions(r)
            lines.append(
                f"| {r['workload']} | {name}{apart(r)} | {r['concurrency']} | {tps(r):.0f} "
                f"| {ratio(tps(r), limit_tps)} | {steady[0]:.0f} ({steady[1]:.1f}) "
                f"| {ratio(steady[0], limit_tps)} | {'-' if wave is None else f'{wave:.2f}'} "
                f"| {'-' if joined is None else f'{joined[0]:.1f} ({joined[1]}/{joined[2]})'} |"
            )
    return "\n".join(lines) if len(lines) > 2 else ""


def burst_way_in(r: dict[str, Any]) -> str:
    """When the 1st, (c/4)-th and c-th job was accepted by the API, then started by the worker,
    in seconds after the first send: how fast the opening burst of c jobs reached the engine."""
    accepted, started = [], []
    for (sent, _), to_accept, queue in zip(r["span_s"], r["send_to_accept_ms"], r["queue_ms"]):
        accepted.append(sent + to_accept / 1000)
        started.append(accepted[-1] + queue / 1000)
    accepted.sort()
    started.sort()
    c = min(r["concurrency"], len(started))
    ks = (0, max(c // 4 - 1, 0), c - 1)
    return (
        "/".join(f"{accepted[k]:.2f}" for k in ks)
        + " -> "
        + "/".join(f"{started[k]:.2f}" for k in ks)
    )


def genq_server_table(result: dict[str, Any]) -> str:
    lines = [
        "| workload | genq conc. | server tok/s (first accepted -> last stored) | x limit "
        "| client send -> API accept p50/p99 ms | result stored -> client p50/p99 ms "
        "| burst: 1st, c/4-th, c-th job accepted -> started (s) |",
        "|---|---|---|---|---|---|---|",
    ]
    for r in result["genq"]:
        limit_tps = limit_of(result, r["workload"])
        server_tps = r["output_tokens"] / r["server_seconds"]
        lines.append(
            f"| {r['workload']} | {r['concurrency']}{apart(r)} | {server_tps:.0f} "
            f"| {ratio(server_tps, limit_tps)} | {_ms(r['send_to_accept_ms'], (50, 99), 1)} "
            f"| {_ms(r['stored_to_client_ms'], (50, 99), 1)} | {burst_way_in(r)} |"
        )
    return "\n".join(lines)


def describe_host(summary: dict[str, Any], top: int = 6) -> str:
    """One line: where the CPU went while a level ran, how full the batch was (hostwatch.py)."""
    if not summary:
        return ""
    parts = [f"host {summary['host_busy_cores']:.1f} cores busy"]
    if summary.get("host_steal_cores"):
        parts[0] += f" ({summary['host_steal_cores']:.2f} stolen)"
    parts += [f"{name} {cores:.2f}" for name, cores in list(summary["cores"].items())[:top]]
    line = "; ".join(parts)
    busiest = list(summary["threads"].items())[:3]
    if busiest:
        line += " | threads: " + ", ".join(f"{n} {c:.2f}" for n, c in busiest)
    if waited := list((summary.get("runqueue") or {}).items())[:3]:
        line += " | waited for a CPU: " + ", ".join(f"{n} {c:.3f}" for n, c in waited)
    if gpu := summary.get("gpu"):
        line += f" | GPU busy {gpu['util_mean']:.0f}%, SM clock {gpu['sm_clock_mean']} MHz"
    if engine := summary.get("engine"):
        line += (
            f" | engine running mean {engine['running_mean']} (p10 {engine['running_p10']:g}),"
            f" waiting mean {engine['waiting_mean']}, none waiting {engine['waiting_zero_share']:.0%}"
        )
    return line


def host_lines(result: dict[str, Any]) -> list[str]:
    """Where the host's CPU went at each level (ops/bench/hostwatch.py), where recorded."""
    lines = []
    for system in ("genq", "vllm_serve", "vllm_serve_plain"):
        for run in result.get(system) or []:
            if line := describe_host(run.get("host") or {}):
                lines.append(
                    f"- {system}, {run['workload']} at {run['concurrency']}{apart(run)}: {line}"
                )
    return ["", "CPU (cores) by process while each level ran:", *lines] if lines else []


def render(result: dict[str, Any]) -> str:
    meta = result["meta"]
    out = [f"machine: {meta['machine']}; model {meta['model']}; vLLM {meta['vllm']}"]
    for workload, description in result["workloads"].items():
        out += ["", f"workload {workload}: {description}", "", workload_table(result, workload)]
    if result.get("genq"):
        out += ["", genq_server_table(result)]
    if steady := steady_table(result):
        out += ["", "While all c were in flight (report.steady_tps):", "", steady]
    out += host_lines(result)
    if info := result.get("worker"):
        phases = ", ".join(f"{k} {v:.1f}" for k, v in info["startup_s"].items())
        curl = result["seed_curl_s"]
        bare = result.get("offline", {}).get("construct_s")
        out += [
            "",
            f"genq worker time to ready (s): {phases}; stack start to /readyz 200: "
            f"{result['ready_s']:.1f}"
            + ("" if bare is None else f"; bare LLM() construction: {bare:.1f}"),
        ]
        if len(curl) > 1:  # none with --seed-curls 0
            out.append(
                f"seed curl after warm-up: first {curl[0] * 1000:.0f} ms, median of the next "
                f"{len(curl) - 1} {pct(curl[1:], 50) * 1000:.0f} ms"
            )
    return "\n".join(out)


if __name__ == "__main__":
    print(render(json.loads(Path(sys.argv[1]).read_text())))
