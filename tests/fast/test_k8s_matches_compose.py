"""ops/k8s and docker-compose.yml describe the same deployment: the same images, commands, ports,
probe paths, environment variable names and volume mount paths.

docker-compose.yml runs for real in CI, so it is the tested reference; the k8s manifests are not
run anywhere and would drift unseen. Ports and paths come from genq itself (its settings'
defaults, its Dockerfiles where the code has no default, its route tables); a probe path counts
only if the process behind it really serves it. Where k8s differs on purpose (a Redis password,
API keys, secrets that are required rather than optional), the difference is asserted as such.
"""

from __future__ import annotations

import json
import re
from functools import cache
from posixpath import dirname
from typing import Any
from urllib.parse import urlsplit

import httpx
import pytest
from pydantic_settings import BaseSettings

import genq.contract.settings
from genq.contract.settings import ApiSettings, FlowerSettings
from tests.fast.test_compose import COMPOSE, SERVICES, _container_port, _dockerfile
from tests.fast.test_k8s_manifests import (
    KUSTOMIZATION,
    OBJECTS,
    _env,
    _is_flower_option,
    _obj,
    _port,
    _secret_data,
    _settings_env_names,
)

# compose service -> k8s workload of the same role. prometheus is compose-only (k8s pods carry
# prometheus.io annotations instead); worker-cpu has no k8s twin (k8s workers have GPUs).
TWINS = {name: f"genq-{name}" for name in ("api", "webhooks", "flower", "worker", "redis")}
GENQ_SERVICES = ("api", "worker", "worker-cpu", "webhooks", "flower")
CONFIG = _obj("ConfigMap", "genq-config")["data"]
SHARED_ENV = COMPOSE["x-genq-env"]  # what compose gives every genq service
# Variables one side sets and the other does not, on purpose (each asserted below).
COMPOSE_ONLY_ENV = {
    # The dev signing secret lives there when GENQ_WEBHOOK_SECRET is unset; k8s requires the secret.
    "webhooks": {"GENQ_DATA_DIR"},
    # Passed on so Flower may run open on a machine of one's own; k8s always runs prod.
    "flower": {"GENQ_ENV"},
}
K8S_ONLY_ENV = {"api": {"GENQ_API_KEYS"}}  # k8s is reachable by others: the API takes keys
# In k8s these come from the Secret and are required (not optional), so no dev fallback runs:
# no generated signing secret under GENQ_DATA_DIR, no open Flower, no open API.
REQUIRED_SECRETS = {
    "webhooks": "GENQ_WEBHOOK_SECRET",
    "flower": "GENQ_FLOWER_BASIC_AUTH",
    "api": "GENQ_API_KEYS",
}
# ConfigMap settings compose leaves at their defaults but k8s changes: a drain of 90 s there
# (config.yaml, under worker.yaml's 120 s), the 60 s default in compose (under its 120 s).
K8S_TUNED = {"GENQ_SHUTDOWN_GRACE_S"}


def _workload(name: str) -> dict[str, Any]:
    kinds = ("Deployment", "StatefulSet")
    (found,) = [o for _, o in OBJECTS if o["kind"] in kinds and o["metadata"]["name"] == name]
    return found


def _k8s(service: str) -> dict[str, Any]:
    (container,) = _workload(TWINS[service])["spec"]["template"]["spec"]["containers"]
    return container


def _dockerfile_value(name: str, instruction: str) -> str:
    (line,) = [i for i in _dockerfile(name) if i.startswith(instruction + " ")]
    return line.split(" ", 1)[1]


def _dockerfile_env(name: str) -> dict[str, str]:
    """Every ENV of a Dockerfile (KEY=value form), all lines merged."""
    lines = [i.split()[1:] for i in _dockerfile(name) if i.startswith("ENV ")]
    return dict(pair.split("=", 1) for line in lines for pair in line)


def _compose_health_urls(service: str) -> list[str]:
    test = " ".join(SERVICES[service].get("healthcheck", {}).get("test", []))
    return re.findall(r"https?://[^\s'\"]+", test)


def _compose_mounts(service: str) -> dict[str, str]:
    """target -> source of a service's short-syntax volumes."""
    return {v.split(":")[1]: v.split(":")[0] for v in SERVICES[service].get("volumes", [])}


def _k8s_mounts(service: str) -> dict[str, str]:
    return {m["mountPath"]: m["name"] for m in _k8s(service).get("volumeMounts", [])}


def _role_port(role: str) -> int:
    """The one source of each port: genq's settings, or the worker image (no code default)."""
    if role == "api":
        return ApiSettings.model_fields["api_port"].default
    if role == "flower":
        return FlowerSettings.model_fields["flower_port"].default
    return int(_dockerfile_env("Dockerfile.worker")["GENQ_WORKER_HTTP_PORT"])


@cache
def _worker_url() -> str:
    from worker.health import WorkerHealth  # noqa: PLC0415 - only the route test needs it

    return f"http://127.0.0.1:{WorkerHealth().serve('127.0.0.1', 0)}"


def _serves(role: str, path: str) -> bool:
    if role == "api":
        from api.app import create_app  # noqa: PLC0415 - builds the app; connects to nothing

        app = create_app(ApiSettings(redis_url="redis://127.0.0.1:1/0"))
        return path in {getattr(route, "path", None) for route in app.routes}
    if role == "flower":
        from flower.urls import handlers  # noqa: PLC0415

        patterns = [h[0] if isinstance(h, tuple) else h.regex.pattern for h in handlers]
        return any(re.fullmatch(p, path) for p in patterns if p != ".*")  # .*: its 404 page
    return httpx.get(_worker_url() + path).status_code != 404  # its routes are an if-chain


def test_each_k8s_container_runs_the_compose_services_image() -> None:
    renamed = {i["name"] for i in KUSTOMIZATION["images"]}
    for service in TWINS:
        image = _k8s(service)["image"]
        assert image == SERVICES[service]["image"], service
        # A genq image not renamed by kustomization.yaml would be pulled from Docker Hub.
        assert not image.startswith("genq-") or image in renamed, image


def test_each_k8s_container_runs_the_compose_command_or_the_image_cmd() -> None:
    for service in ("api", "webhooks", "flower", "worker"):
        dockerfile = SERVICES[service]["build"]["dockerfile"].removeprefix("ops/")
        # k8s `command` replaces ENTRYPOINT while compose's only replaces CMD: same only without.
        assert not any(i.startswith("ENTRYPOINT") for i in _dockerfile(dockerfile))
        expected = SERVICES[service].get("command") or json.loads(
            _dockerfile_value(dockerfile, "CMD")
        )
        assert _k8s(service)["command"] == expected, service
        assert "args" not in _k8s(service)


def test_ports_agree_with_genq_settings_and_the_worker_image() -> None:
    for role in ("api", "flower", "worker"):
        port, container = _role_port(role), _k8s(role)
        assert [p["containerPort"] for p in container["ports"]] == [port], role
        pod = _workload(TWINS[role])["spec"]["template"]
        assert pod["metadata"]["annotations"]["prometheus.io/port"] == str(port), role
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            if probe in container:
                assert _port(container, container[probe]["httpGet"]["port"]) == port, role
        services = ["worker", "worker-cpu"] if role == "worker" else [role]
        for url in [u for s in services for u in _compose_health_urls(s)]:
            assert urlsplit(url).port == port, url
    assert _container_port("api") == _role_port("api")
    assert _container_port("flower") == _role_port("flower")
    # Nothing overrides the settings' defaults, which are what the ports above assume.
    envs = [_env(_k8s(s)) for s in TWINS] + [SERVICES[s].get("environment", {}) for s in SERVICES]
    assert not [e for e in envs if {"GENQ_API_PORT", "GENQ_FLOWER_PORT"} & set(e)]
    worker = str(_role_port("worker"))
    assert _env(_k8s("worker"))["GENQ_WORKER_HTTP_PORT"] == worker
    assert SERVICES["worker"]["environment"]["GENQ_WORKER_HTTP_PORT"] == worker
    exposed = {int(p) for p in _dockerfile_value("Dockerfile.api", "EXPOSE").split()}
    assert exposed == {_role_port("api"), _role_port("flower")}


def test_every_probe_path_is_a_route_its_process_serves() -> None:
    paths: set[tuple[str, str]] = set()
    for role in ("api", "flower", "worker"):
        container = _k8s(role)
        paths |= {(role, container[p]["httpGet"]["path"]) for p in container if p.endswith("Probe")}
        pod = _workload(TWINS[role])["spec"]["template"]
        paths.add((role, pod["metadata"]["annotations"]["prometheus.io/path"]))
    for service, role in (("api", "api"), ("worker", "worker"), ("worker-cpu", "worker")):
        paths |= {(role, urlsplit(url).path) for url in _compose_health_urls(service)}
    assert sorted(p for p in paths if not _serves(*p)) == []


def test_api_health_and_worker_readiness_use_the_same_path_in_both() -> None:
    (api_url,), (worker_url,) = _compose_health_urls("api"), _compose_health_urls("worker")
    for probe in ("readinessProbe", "livenessProbe"):
        assert _k8s("api")[probe]["httpGet"]["path"] == urlsplit(api_url).path
    assert _k8s("worker")["readinessProbe"]["httpGet"]["path"] == urlsplit(worker_url).path


def test_every_variable_compose_gives_genq_is_a_settings_field() -> None:
    fields, nested = _settings_env_names()

    def known(name: str) -> bool:
        head, _, sub = name.partition("__")
        if sub:
            return sub in nested.get(head, set())
        return name in fields or (name.startswith("FLOWER_") and _is_flower_option(name))

    names = {n for s in GENQ_SERVICES for n in SERVICES[s].get("environment", {})}
    assert sorted(n for n in names if not known(n)) == []


def test_each_k8s_twin_sets_the_variables_its_compose_service_sets() -> None:
    config_only = set(CONFIG) - set(SHARED_ENV)  # checked by the next test
    for service in ("api", "webhooks", "flower", "worker"):
        compose_env = SERVICES[service].get("environment", {})
        k8s_env = _env(_k8s(service))
        assert set(compose_env) - set(k8s_env) == COMPOSE_ONLY_ENV.get(service, set()), service
        k8s_only = set(k8s_env) - set(compose_env) - config_only
        assert k8s_only == K8S_ONLY_ENV.get(service, set()), service
        for name, value in compose_env.items():  # literal values agree; ${...} is the host's
            if isinstance(value, str) and "${" not in value and k8s_env.get(name) is not None:
                assert k8s_env[name] == value, (service, name)
    for service, name in REQUIRED_SECRETS.items():
        (var,) = [v for v in _k8s(service)["env"] if v["name"] == name]
        assert not var["valueFrom"]["secretKeyRef"].get("optional", False), name
    assert "GENQ_ENV" not in CONFIG  # prod, the default: Flower never runs open


def test_settings_only_k8s_sets_are_compose_defaults_unless_tuned(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Compared as genq parses them ("{}" is the dict default), each by its settings class."""
    owner: dict[str, tuple[type[BaseSettings], str]] = {}
    for cls in vars(genq.contract.settings).values():
        if isinstance(cls, type) and issubclass(cls, BaseSettings):
            owner.update({f"GENQ_{field.upper()}": (cls, field) for field in cls.model_fields})

    def parsed(name: str, value: str | None) -> Any:
        monkeypatch.delenv(name, raising=False)
        if value is not None:
            monkeypatch.setenv(name, value)
        cls, field = owner[name]
        return getattr(cls(), field)

    extra = set(CONFIG) - set(SHARED_ENV)
    tuned = {n for n in extra if parsed(n, CONFIG[n]) != parsed(n, None)}
    assert tuned == K8S_TUNED


def test_redis_listens_where_redis_url_points_and_k8s_adds_a_password() -> None:
    compose_url, k8s_url = urlsplit(SHARED_ENV["REDIS_URL"]), urlsplit(_secret_data()["REDIS_URL"])
    port = compose_url.port or 6379  # redis:// without a port means Redis's default
    assert [p["containerPort"] for p in _k8s("redis")["ports"]] == [port]
    assert (k8s_url.port, k8s_url.path) == (port, compose_url.path)
    assert compose_url.hostname == "redis" and _obj("Service", k8s_url.hostname)
    # The one deliberate difference: k8s Redis is reachable cluster-wide, so it needs a password.
    assert compose_url.password is None and k8s_url.password
    command, args = SERVICES["redis"]["command"], _k8s("redis")["args"]
    assert args == [*command, "--requirepass", "$(REDIS_PASSWORD)"]
    assert "command" not in _k8s("redis")  # args: the image's entrypoint still drops root


def test_worker_caches_are_at_the_worker_images_cache_dir_in_both() -> None:
    cache_dir = _dockerfile_env("Dockerfile.worker")["GENQ_CACHE_DIR"]
    assert SERVICES["worker"]["environment"]["GENQ_CACHE_DIR"] == cache_dir
    assert _env(_k8s("worker"))["GENQ_CACHE_DIR"] == cache_dir
    assert set(_compose_mounts("worker")) == {cache_dir}
    # k8s has no shm_size: a memory-backed emptyDir of the same size at /dev/shm stands in.
    assert set(_k8s_mounts("worker")) == {cache_dir, "/dev/shm"}
    volumes = _workload("genq-worker")["spec"]["template"]["spec"]["volumes"]
    (shm,) = [v for v in volumes if v["name"] == _k8s_mounts("worker")["/dev/shm"]]
    assert shm["emptyDir"]["medium"] == "Memory"
    size = shm["emptyDir"]["sizeLimit"].lower()  # "2Gi" for compose's "2gb" (both binary)
    assert SERVICES["worker"]["shm_size"].lower().removesuffix("b") + "i" == size


def test_flower_keeps_its_database_on_the_same_mount() -> None:
    db = SERVICES["flower"]["environment"]["FLOWER_DB"]
    assert _env(_k8s("flower"))["FLOWER_DB"] == db
    assert set(_compose_mounts("flower")) == set(_k8s_mounts("flower")) == {dirname(db)}


def test_only_compose_keeps_the_webhooks_data_dir_as_k8s_requires_the_secret() -> None:
    # GENQ_DATA_DIR holds the dev signing secret made when GENQ_WEBHOOK_SECRET is unset, which
    # k8s never lets happen (REQUIRED_SECRETS, checked above).
    data_dir = SERVICES["webhooks"]["environment"]["GENQ_DATA_DIR"]
    assert set(_compose_mounts("webhooks")) == {data_dir}
    assert _k8s_mounts("webhooks") == {}


def test_redis_keeps_data_and_reads_ops_redis_conf_at_the_same_paths() -> None:
    conf = SERVICES["redis"]["command"][1]
    assert _compose_mounts("redis")[conf] == "./ops/redis.conf"
    assert "/data" in _compose_mounts("redis") and "/data" in _k8s_mounts("redis")
    redis = _workload("genq-redis")["spec"]["template"]["spec"]
    (volume,) = [v for v in redis["volumes"] if v["name"] == _k8s_mounts("redis")[dirname(conf)]]
    assert conf.rsplit("/", 1)[1] in _obj("ConfigMap", volume["configMap"]["name"])["data"]
    assert set(_k8s_mounts("redis")) == {"/data", dirname(conf)}
