"""Every tracked file must read to someone outside the team: no words only the team knows.

Four kinds of word tell a reader of the code or the docs nothing: a numbered period of the
team's work, a number from its tracker, its nickname for the original product brief, and a count
of the GPU machines it rented for a measurement. Say what is meant instead: the requirement, the
reason, or the number and the page that shows it (docs/performance.md). genq's own leases, a
worker's claim on a running job (``genq:jobs:leases``, ``lease_s``, "its lease lapsed"), are
product words: they do not match. File names are checked too.
"""

from __future__ import annotations

import re
import subprocess
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
THIS = Path(__file__).resolve().relative_to(ROOT).as_posix()
IMAGES = {".png", ".jpg", ".jpeg", ".gif", ".svg", ".ico", ".webp"}

TEAM_WORDS = re.compile(
    "|".join(
        (
            r"\bsessions? \d+",  # a period of the team's work
            r"\bsession-?\d+",  # the same in a file name
            r"\bissue #?\d+",  # a tracker's number
            r"\bthe\sseed\b",  # the original product brief
            # A rented GPU machine, never a job's lease (LEASES_SET, renew_leases, "its lease"):
            r"\b(H100|H200|GPU|device)\b[^\n]{0,40}\bleases?\b",
            r"\bleases?\b[^\n]{0,20}\b(H100|H200|GPU)\b",
            r"\b(that|this|another|earlier|different|first|second|third|one|two|three|\d+) leases?\b",
            r"\blease (?-i:[A-Z])\b",  # a machine named by a capital letter
        )
    ),
    re.IGNORECASE,
)


def _tracked() -> list[str]:
    out = subprocess.run(
        ["git", "ls-files", "-z"], cwd=ROOT, capture_output=True, text=True, check=True
    ).stdout
    return [name for name in out.split("\0") if name]


def _text(name: str) -> str | None:
    """The file's text; None for this file, an image, a lock, a binary or a file deleted since."""
    path = ROOT / name
    if name == THIS or path.suffix in IMAGES or name.startswith("ops/lock/") or not path.is_file():
        return None
    data = path.read_bytes()
    return None if b"\0" in data[:8192] else data.decode("utf-8", errors="replace")


def test_no_words_only_the_team_knows() -> None:
    found = []
    for name in _tracked():
        if match := TEAM_WORDS.search(name):
            found.append(f"{name}: (the file's name) {match.group(0)!r}")
        for number, line in enumerate((_text(name) or "").splitlines(), 1):
            found += [f"{name}:{number}: {m.group(0)!r}" for m in TEAM_WORDS.finditer(line)]
    assert not found, "words only the team knows; say what is meant:\n" + "\n".join(found)
