"""Where vLLM's engine core spent its time, and how often new jobs joined its batch: the two
readings that explain genq's gap to `vllm serve` at saturation (docs/performance.md, "At
fixed-length saturation the gap was mixed steps, not genq's per-job cost").

    python3 ops/bench/engine_core.py profiles A-core-profile.txt.gz B-core-profile.txt.gz ...
    python3 ops/bench/engine_core.py admissions A.json B.json ...

``profiles``: py-spy raw stacks of the engine core (``gpu-engine-core.sh`` records them, --idle
--threads), the main thread's samples by the step phase they fall in, as a share of them, one
column per file. ``admissions``: for each level of a bench result with first tokens, how often
new jobs joined the engine's batch (``report.admissions``; ``report.py`` prints it beside the
steady rate too): every admission is a step that prefills new prompts beside the running
batch's decodes.
"""

from __future__ import annotations

import argparse
import gzip
import json
import sys
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[2]))

from ops.bench.report import SYSTEMS, admissions  # noqa: E402

# The frames that name a phase, the narrower ones first: a stack is in the phase of the first of
# them it holds. The names are vLLM's (0.22 on the GPU); py-spy writes "function (file:line)".
PHASES = [
    ("GPUModelRunner._model_forward", "model forward run by Python (no full CUDA graph)"),
    ("AsyncOutputFuture.result", "waiting for the GPU's output"),
    ("UniProcExecutor.sample_tokens", "sampling"),
    ("Scheduler.update_from_output", "scheduler: update from output"),
    ("Scheduler.schedule", "scheduler: schedule"),
    ("GPUModelRunner._prepare_inputs", "runner: prepare inputs"),
    ("GPUModelRunner._update_states", "runner: update states"),
    ("GPUModelRunner._build_attention_metadata", "runner: attention metadata"),
    ("GPUModelRunner.execute_model", "runner: other"),
    ("EngineCoreProc._process_engine_step", "engine step: other"),
]


def _open(path: Path):
    return gzip.open(path, "rt") if path.suffix == ".gz" else path.open()


def phase_shares(path: Path) -> dict[str, float]:
    """The engine core's main thread in ``path`` (py-spy raw), by phase: share of its samples.
    A core that forked from genq's engine loop names its main thread after that loop's thread:
    the thread with the most samples in an engine step counts as the main one."""
    by_thread: dict[str, Counter[str]] = {}
    with _open(path) as lines:
        for line in lines:
            stack, _, count = line.rstrip("\n").rpartition(" ")
            thread, _, frames = stack.partition(";")
            names = [frame.split(" (")[0] for frame in frames.split(";") if frame]
            phase = next(
                (label for name, label in PHASES if name in names),
                "other" if names else "idle (empty stack)",
            )
            by_thread.setdefault(thread, Counter())[phase] += int(count)
    main = max(by_thread.values(), key=lambda c: sum(v for k, v in c.items() if k != "other"))
    total = sum(main.values())
    return {phase: n / total for phase, n in main.items()}


def admission_events(result: dict) -> list[dict]:
    """Every level of a bench result with first tokens, and its admissions (report.admissions)."""
    rows = []
    for system, _ in SYSTEMS:
        for run in result.get(system, []):
            if (joined := admissions(run)) is not None:
                per_s, p50, p90 = joined
                rows.append(
                    {
                        "system": system,
                        "concurrency": run.get("concurrency"),
                        "events_per_s": per_s,
                        "size_p50": p50,
                        "size_p90": p90,
                    }
                )
    return rows


def main(argv: list[str] | None = None) -> None:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    p.add_argument("what", choices=["profiles", "admissions"])
    p.add_argument("files", nargs="+", type=Path)
    args = p.parse_args(argv)
    if args.what == "profiles":
        columns = {f.name.split("-core-profile")[0]: phase_shares(f) for f in args.files}
        order = [label for _, label in PHASES] + ["other", "idle (empty stack)"]
        print("| main thread, % of samples | " + " | ".join(columns) + " |")
        print("|---" * (len(columns) + 1) + "|")
        for phase in order:
            cells = [f"{100 * shares.get(phase, 0.0):.1f}" for shares in columns.values()]
            print(f"| {phase} | " + " | ".join(cells) + " |")
        return
    print("| run | system | conc. | admissions/s | jobs each p50/p90 |")
    print("|---|---|---|---|---|")
    for path in args.files:
        for row in admission_events(json.loads(path.read_text())):
            print(
                f"| {path.stem} | {row['system']} | {row['concurrency']} | "
                f"{row['events_per_s']:.1f} | {row['size_p50']}/{row['size_p90']} |"
            )


if __name__ == "__main__":
    sys.exit(main())
