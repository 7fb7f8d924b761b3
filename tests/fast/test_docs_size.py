"""docs/bench/ holds one small summary per topic, not raw per-job results.

A raw benchmark result keeps every job's latency and span: 0.4-0.8 MB per GPU run, and the tree
once carried 39 MB of them. The docs quote summaries (ops/bench/summarize.py: percentiles in
place of per-job lists, the printed tables beside them); raw runs stay outside the tree.
"""

from __future__ import annotations

import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
BENCH = "docs/bench"
MAX_TOTAL = 2 * 1024 * 1024
MAX_FILE = 256 * 1024
WHAT_TO_DO = (
    "keep one summary per topic in docs/bench/ (.venv/bin/python ops/bench/summarize.py RAW.json "
    "--out docs/bench/TOPIC.json), not raw runs or per-job dumps; keep raw results out of the tree"
)


def _sizes() -> dict[str, int]:
    """Bytes of every file under docs/bench that git tracks or would add (ignored ones aside)."""
    out = subprocess.run(
        ["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard", "--", BENCH],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    paths = {name for name in out.split("\0") if name}
    return {name: (ROOT / name).stat().st_size for name in paths if (ROOT / name).is_file()}


def test_docs_bench_is_at_most_2_mb_in_all() -> None:
    sizes = _sizes()
    total = sum(sizes.values())
    largest = sorted(sizes.items(), key=lambda item: -item[1])[:5]
    assert total <= MAX_TOTAL, (
        f"{BENCH} holds {total:,} bytes in {len(sizes)} files (at most {MAX_TOTAL:,}); largest: "
        + ", ".join(f"{name} {size:,}" for name, size in largest)
        + f". {WHAT_TO_DO}"
    )


def test_no_file_in_docs_bench_is_over_256_kb() -> None:
    big = {name: size for name, size in _sizes().items() if size > MAX_FILE}
    assert not big, (
        f"over {MAX_FILE:,} bytes: "
        + ", ".join(f"{name} {size:,}" for name, size in sorted(big.items()))
        + f". {WHAT_TO_DO}"
    )
