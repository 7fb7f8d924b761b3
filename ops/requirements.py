"""Print genq's requirements from pyproject.toml, one a line: its dependencies and those of each
extra named. The Dockerfiles install them (constrained by a lock in ops/lock) before they copy
genq's code in, so that a change to the code rebuilds one small layer and not the dependencies.

An extra may name another of genq's own (``genq[server]`` in the worker extras): that one's
requirements are printed in its place, as pip would install them, since the Dockerfiles install
these lines before genq itself exists to refer to.

    python ops/requirements.py server worker-cpu > requirements.txt
    python ops/requirements.py --digest     # the inputs' fingerprint that each lock file carries
"""

from __future__ import annotations

import hashlib
import json
import re
import sys
from pathlib import Path

import tomllib

REPO = Path(__file__).resolve().parents[1]
PYPROJECT = REPO / "pyproject.toml"
LOCK_DIR = REPO / "ops" / "lock"


def _canonical(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _own_extras(requirement: str, project: str) -> list[str] | None:
    """The extras of ``project[a,b]`` when ``requirement`` names the project itself, else None."""
    found = re.fullmatch(r"\s*([A-Za-z0-9][A-Za-z0-9._-]*)\s*\[([^\]]*)\]\s*", requirement)
    if found is None or _canonical(found[1]) != _canonical(project):
        return None
    return [extra.strip() for extra in found[2].split(",") if extra.strip()]


def requirements(extras: list[str]) -> list[str]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    optional = project["optional-dependencies"]
    found: list[str] = list(project["dependencies"])
    seen: set[str] = set()

    def add(extra: str) -> None:
        if extra in seen:
            return
        seen.add(extra)
        for requirement in optional[extra]:
            own = _own_extras(requirement, project["name"])
            if own is None:
                found.append(requirement)
            else:
                for other in own:
                    add(other)

    for extra in extras:
        add(extra)
    return list(dict.fromkeys(found))


def digest() -> str:
    """sha256 of what the lock files are compiled from: pyproject.toml's dependency lists and the
    extra inputs in ops/lock (``*.in``). ops/lock/update.sh writes it into each lock's header, and
    tests/fast/test_install.py checks that it still matches, so that a dependency changed without
    `make lock` is caught."""
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    inputs = {
        "dependencies": project["dependencies"],
        "optional-dependencies": project["optional-dependencies"],
        "in": {path.name: path.read_text() for path in sorted(LOCK_DIR.glob("*.in"))},
    }
    return hashlib.sha256(json.dumps(inputs, sort_keys=True).encode()).hexdigest()


if __name__ == "__main__":
    if sys.argv[1:] == ["--digest"]:
        print(digest())
    else:
        print("\n".join(requirements(sys.argv[1:])))
