"""Every Redis genq sets up fails safe: a maxmemory with noeviction, below the memory its container
may use (which must also hold the AOF rewrite's copy-on-write pages and client buffers)."""

from __future__ import annotations

import re
from pathlib import Path

import yaml

from genq.store.embedded import EmbeddedRedis

ROOT = Path(__file__).resolve().parents[2]
UNITS = {
    "": 1,
    "b": 1,
    "kb": 1000,
    "k": 1000,
    "mb": 1000**2,
    "m": 1000**2,
    "gb": 1000**3,
    "g": 1000**3,
    "ki": 1024,
    "mi": 1024**2,
    "gi": 1024**3,
}


def size(text: str) -> int:
    number, unit = re.fullmatch(r"([0-9]+)\s*([a-zA-Z]*)", text.strip()).groups()
    return int(number) * UNITS[unit.lower()]


def conf(text: str) -> dict[str, str]:
    pairs = (line.split(None, 1) for line in text.splitlines() if line and not line.startswith("#"))
    return {key: value.strip() for key, value in pairs}


def test_redis_conf_has_maxmemory_noeviction_below_the_compose_and_k8s_limits() -> None:
    settings = conf((ROOT / "ops/redis.conf").read_text())
    assert settings["maxmemory-policy"] == "noeviction"
    maxmemory = size(settings["maxmemory"])
    compose = yaml.safe_load((ROOT / "docker-compose.yml").read_text())
    assert maxmemory < 0.8 * size(compose["services"]["redis"]["mem_limit"])
    (statefulset,) = [
        doc
        for doc in yaml.safe_load_all((ROOT / "ops/k8s/redis.yaml").read_text())
        if doc and doc["kind"] == "StatefulSet"
    ]
    (container,) = statefulset["spec"]["template"]["spec"]["containers"]
    assert maxmemory < 0.8 * size(container["resources"]["limits"]["memory"])


def test_the_embedded_redis_has_a_maxmemory_and_noeviction(tmp_path: Path) -> None:
    command = EmbeddedRedis(tmp_path, maxmemory="64mb").command()
    assert command[command.index("--maxmemory") + 1] == "64mb"
    assert command[command.index("--maxmemory-policy") + 1] == "noeviction"
