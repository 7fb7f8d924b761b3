"""Print genq's requirements from pyproject.toml, one a line: its dependencies and those of each
extra named. The Dockerfiles install them before they copy genq's code in, so that a change to the
code rebuilds one small layer and not the dependencies.

    python ops/requirements.py worker-cpu > requirements.txt
"""

from __future__ import annotations

import sys
from pathlib import Path

import tomllib

PYPROJECT = Path(__file__).resolve().parents[1] / "pyproject.toml"


def requirements(extras: list[str]) -> list[str]:
    project = tomllib.loads(PYPROJECT.read_text())["project"]
    found = list(project["dependencies"])
    for extra in extras:
        found += project["optional-dependencies"][extra]
    return found


if __name__ == "__main__":
    print("\n".join(requirements(sys.argv[1:])))
