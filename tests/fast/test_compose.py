"""docker-compose.yml, its Dockerfiles and ops/prometheus/prometheus.yml: the services genq needs,
wired the way its code expects.

These tests start no container: they read the files, and where the docker CLI has its compose
plugin, `docker compose config -q` validates docker-compose.yml against the Compose schema for
each profile (without the plugin that check is skipped, not run). The stack itself is built,
started and checked for real by ops/docker/compose-check.sh (`make compose-test`, tests/compose).
"""

from __future__ import annotations

import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import yaml
from pydantic_settings import BaseSettings

from genq.contract.settings import ApiSettings, WorkerSettings
from ops.requirements import requirements

if sys.version_info >= (3, 11):
    import tomllib
else:  # pytest itself depends on tomli there
    import tomli as tomllib

REPO = Path(__file__).resolve().parents[2]
COMPOSE_FILE = REPO / "docker-compose.yml"
COMPOSE = yaml.safe_load(COMPOSE_FILE.read_text())
SERVICES: dict[str, dict[str, Any]] = COMPOSE["services"]
PROMETHEUS = yaml.safe_load((REPO / "ops" / "prometheus" / "prometheus.yml").read_text())
PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())
WORKERS = ("worker", "worker-cpu")
GENQ_IMAGES = ("api", "worker", "worker-cpu", "webhooks", "flower")


def _seconds(duration: str) -> float:
    """A compose duration ("600s", "1m30s") in seconds."""
    parts = re.findall(r"(\d+(?:\.\d+)?)(ms|s|m|h)", duration)
    assert "".join(n + u for n, u in parts) == duration, duration
    scale = {"ms": 0.001, "s": 1, "m": 60, "h": 3600}
    return sum(float(n) * scale[u] for n, u in parts)


def _container_port(service: str) -> int:
    """The container side of a service's one published port ("[ip:]host:container")."""
    (mapping,) = SERVICES[service]["ports"]
    return int(mapping.rsplit(":", 1)[-1])


def _named_volume_at(service: str, path: str) -> str:
    """The named volume mounted at ``path`` in ``service``."""
    (source,) = [v.split(":")[0] for v in SERVICES[service]["volumes"] if v.split(":")[1] == path]
    assert source in COMPOSE["volumes"], f"{service}: {path} is not on a named volume"
    return source


def _dockerfile(name: str) -> list[str]:
    """A Dockerfile's instructions: comments dropped, continued lines joined."""
    text = (REPO / "ops" / name).read_text()
    lines = [line for line in text.splitlines() if not line.lstrip().startswith("#")]
    return [" ".join(i.split()) for i in "\n".join(lines).replace("\\\n", " ").splitlines() if i]


def _worker_port(service: str) -> int:
    return int(SERVICES[service]["environment"]["GENQ_WORKER_HTTP_PORT"])


def test_compose_has_every_service() -> None:
    assert set(SERVICES) == {
        "redis",
        "api",
        "worker",
        "worker-cpu",
        "webhooks",
        "flower",
        "prometheus",
    }
    # The workers sit in profiles, one of which a user names: `docker compose --profile gpu up`
    # on a GPU host, `--profile cpu` elsewhere; the rest runs with either.
    assert {name: s["profiles"] for name, s in SERVICES.items() if "profiles" in s} == {
        "worker": ["gpu"],
        "worker-cpu": ["cpu"],
    }


def test_images_are_built_from_the_dockerfiles_in_ops() -> None:
    for name in GENQ_IMAGES:
        build = SERVICES[name]["build"]
        assert build["context"] == "."
        assert build["dockerfile"].startswith("ops/") and (REPO / build["dockerfile"]).is_file()
    assert SERVICES["worker"]["build"]["dockerfile"] == "ops/Dockerfile.worker"
    assert SERVICES["api"]["build"]["dockerfile"] == "ops/Dockerfile.api"
    # The worker image's extras (its default, and the CPU profile's) exist in pyproject.toml.
    extras = PYPROJECT["project"]["optional-dependencies"]
    assert "ARG EXTRA=worker-gpu" in _dockerfile("Dockerfile.worker")
    assert SERVICES["worker-cpu"]["build"]["args"]["EXTRA"] == "worker-cpu"
    assert {"worker-gpu", "worker-cpu"} <= set(extras)
    assert any(dep.startswith("vllm==") for dep in extras["worker-gpu"])


def test_the_api_image_installs_no_torch_and_no_vllm() -> None:
    """API, webhooks and Flower share it: genq's server extra only, no worker extra."""
    instructions = _dockerfile("Dockerfile.api")
    for instruction in instructions:
        assert not re.search(r"torch|vllm|worker-(gpu|cpu)|\.\[", instruction), instruction
    # Its dependencies (ops/requirements.py with the server extra) at the CPU lock's versions,
    # then genq itself without them.
    deps, package = [i for i in instructions if "pip install" in i]
    assert "python ops/requirements.py server >" in deps
    assert "-c ops/lock/cpu.txt" in deps
    assert "COPY ops/lock/cpu.txt ./ops/lock/" in instructions[: instructions.index(deps)]
    assert package == "RUN pip install --no-deps ."
    server = " ".join(requirements(["server"]))
    assert "torch" not in server and "vllm" not in server
    for name in ("api", "webhooks", "flower"):
        assert SERVICES[name]["build"]["dockerfile"] == "ops/Dockerfile.api"


def test_the_dockerignore_lets_in_everything_the_dockerfiles_copy() -> None:
    """.dockerignore is an allow-list ("*", then "!path"): a COPY of a path it leaves out fails
    the build with "not found"."""
    lines = [line.strip() for line in (REPO / ".dockerignore").read_text().splitlines()]
    assert "*" in lines
    allowed = [line[1:].rstrip("/") for line in lines if line.startswith("!")]
    for name in ("Dockerfile.api", "Dockerfile.worker"):
        for instruction in _dockerfile(name):
            if not instruction.startswith("COPY "):
                continue
            for source in instruction.split()[1:-1]:
                source = source.rstrip("/")
                assert (REPO / source).exists(), f"{name}: {source}"
                assert any(source == a or source.startswith(f"{a}/") for a in allowed), (
                    f"{name} copies {source}, which .dockerignore keeps out"
                )


def test_redis_keeps_an_append_only_file_on_a_volume() -> None:
    redis = SERVICES["redis"]
    conf_path = redis["command"][-1]
    (mount,) = [v for v in redis["volumes"] if v.split(":")[1] == conf_path]
    conf = (REPO / mount.split(":")[0]).read_text().splitlines()
    assert "appendonly yes" in conf and "appendfsync everysec" in conf
    _named_volume_at("redis", "/data")


def test_the_api_waits_for_redis_only() -> None:
    """Not for a warm worker: jobs wait in the queue while the workers get warm."""
    assert SERVICES["api"]["depends_on"] == {"redis": {"condition": "service_healthy"}}


def test_the_gpu_worker_reserves_one_nvidia_gpu() -> None:
    (device,) = SERVICES["worker"]["deploy"]["resources"]["reservations"]["devices"]
    assert device["driver"] == "nvidia" and device["count"] == 1
    assert "gpu" in device["capabilities"]
    assert "deploy" not in SERVICES["worker-cpu"]


def _grace_s(service: dict[str, Any], settings: type[BaseSettings], field: str) -> float:
    """A shutdown grace as the service gets it: its environment, else the setting's default."""
    value = service.get("environment", {}).get(f"GENQ_{field.upper()}")
    return float(value or settings.model_fields[field].default)


def test_the_api_is_stopped_after_its_shutdown_grace() -> None:
    api = SERVICES["api"]
    grace = _grace_s(api, ApiSettings, "api_shutdown_grace_s")
    assert _seconds(api["stop_grace_period"]) > grace  # waits are answered, not cut


@pytest.mark.parametrize("name", WORKERS)
def test_a_worker_is_healthy_only_once_warm(name: str) -> None:
    worker = SERVICES[name]
    check = worker["healthcheck"]
    assert f"http://127.0.0.1:{_worker_port(name)}/readyz" in " ".join(check["test"])
    assert _seconds(check["start_period"]) >= 600  # model load, compile and warm-up
    grace = _grace_s(worker, WorkerSettings, "shutdown_grace_s")
    assert _seconds(worker["stop_grace_period"]) > grace  # a drain is never cut short
    assert worker["restart"] == "unless-stopped"


@pytest.mark.parametrize("name", WORKERS)
def test_a_workers_caches_are_on_a_volume_at_genq_cache_dir(name: str) -> None:
    cache_dir = SERVICES[name]["environment"]["GENQ_CACHE_DIR"]
    assert _named_volume_at(name, cache_dir) == "genq-cache"


def test_the_worker_image_serves_its_port_and_keeps_caches_under_cache() -> None:
    instructions = _dockerfile("Dockerfile.worker")
    variables = dict(
        pair.split("=", 1)
        for env in instructions
        if env.startswith("ENV ")
        for pair in env.split()[1:]
    )
    assert variables["GENQ_CACHE_DIR"] == SERVICES["worker"]["environment"]["GENQ_CACHE_DIR"]
    assert variables["GENQ_WORKER_HTTP_PORT"] == str(_worker_port("worker"))
    assert f"EXPOSE {_worker_port('worker')}" in instructions


def _scrape_targets() -> set[tuple[str, int]]:
    targets: set[tuple[str, int]] = set()
    for job in PROMETHEUS["scrape_configs"]:
        assert job.get("metrics_path", "/metrics") == "/metrics"
        for static in job.get("static_configs", []):
            for target in static["targets"]:
                host, port = target.rsplit(":", 1)
                targets.add((host, int(port)))
        for dns in job.get("dns_sd_configs", []):
            assert dns["type"] == "A"
            targets.update((host, dns["port"]) for host in dns["names"])
    return targets


def test_prometheus_scrapes_the_api_the_workers_and_flower_on_their_ports() -> None:
    assert _scrape_targets() == {
        ("api", _container_port("api")),
        ("worker", _worker_port("worker")),
        ("worker-cpu", _worker_port("worker-cpu")),
        ("flower", _container_port("flower")),
    }
    prometheus = SERVICES["prometheus"]
    assert prometheus["image"].startswith("prom/prometheus:")
    assert (
        "./ops/prometheus/prometheus.yml:/etc/prometheus/prometheus.yml:ro" in prometheus["volumes"]
    )


def _has_compose() -> bool:
    if not shutil.which("docker"):
        return False
    found = subprocess.run(["docker", "compose", "version"], capture_output=True, check=False)
    return found.returncode == 0


@pytest.mark.parametrize("profile", ["", "cpu", "gpu"])
def test_compose_config_validates(profile: str) -> None:
    if not _has_compose():
        pytest.skip(
            "no `docker compose`: `config -q` not run; `make compose-cli` installs the plugin"
        )
    profiles = ["--profile", profile] if profile else []
    result = subprocess.run(
        ["docker", "compose", "-f", str(COMPOSE_FILE), *profiles, "config", "-q"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert result.returncode == 0, result.stderr
