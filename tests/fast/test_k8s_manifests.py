"""ops/k8s: every manifest is valid Kubernetes, and agrees with genq's code and contracts.

Nothing is applied to a cluster. Built-in kinds are validated against the Kubernetes OpenAPI
schemas that the `kubernetes-validate` package ships (offline, strict: unknown fields fail);
KEDA's kinds are not in them, so they and the ties to the code are checked structurally.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import pytest
import yaml
from pydantic import AliasChoices, BaseModel
from pydantic_settings import BaseSettings

import genq.contract.settings
from genq.contract.constants import DEFAULT_QUEUE, model_queue
from genq.contract.models import served_name
from genq.contract.settings import ApiSettings, WorkerSettings

K8S = Path(__file__).resolve().parents[2] / "ops" / "k8s"
REDIS_CONF = K8S.parent / "redis.conf"
SECRET_EXAMPLE = "secret.example.yaml"
# The Kubernetes versions the manifests must be valid for: the oldest targeted and the newest the
# installed kubernetes-validate knows.
OLDEST_K8S = "1.30.0"
# The worker's HTTP endpoint (worker/health.py).
WORKER_PORT = 9100


def _docs(path: Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]


MANIFESTS = sorted(p for p in K8S.glob("*.yaml") if p.name != "kustomization.yaml")
OBJECTS = [(p.name, doc) for p in MANIFESTS for doc in _docs(p)]
KUSTOMIZATION = _docs(K8S / "kustomization.yaml")[0]


def _obj(kind: str, name: str) -> dict[str, Any]:
    found = [o for _, o in OBJECTS if o["kind"] == kind and o["metadata"]["name"] == name]
    assert len(found) == 1, f"{kind}/{name}: {len(found)} found"
    return found[0]


def _workloads() -> list[dict[str, Any]]:
    return [o for _, o in OBJECTS if o["kind"] in ("Deployment", "StatefulSet")]


def _container(workload: str) -> dict[str, Any]:
    (container,) = _obj("Deployment", workload)["spec"]["template"]["spec"]["containers"]
    return container


def _env(container: dict[str, Any]) -> dict[str, str | None]:
    """A container's environment: its ConfigMaps' keys, then its own (None: from a Secret)."""
    env: dict[str, str | None] = {}
    for source in container.get("envFrom", []):
        env.update(_obj("ConfigMap", source["configMapRef"]["name"])["data"])
    for var in container.get("env", []):
        env[var["name"]] = var.get("value")
    return env


def _secret_data() -> dict[str, str]:
    (secret,) = _docs(K8S / SECRET_EXAMPLE)
    return secret["stringData"]


def _port(container: dict[str, Any], ref: int | str) -> int:
    """A probe's or Service's port, by number or by the container port's name."""
    if isinstance(ref, int):
        return ref
    (number,) = [p["containerPort"] for p in container["ports"] if p["name"] == ref]
    return number


def _grace_s(workload: str, settings: type[BaseSettings], field: str) -> float:
    """A shutdown grace as the workload's container gets it: its env, else the setting's
    default."""
    value = _env(_container(workload)).get(f"GENQ_{field.upper()}")
    return float(settings.model_fields[field].default if value is None else value)


def test_kustomization_lists_every_manifest_but_the_secret_example() -> None:
    listed = set(KUSTOMIZATION["resources"])
    assert listed == {p.name for p in MANIFESTS} - {SECRET_EXAMPLE}
    assert _obj("Namespace", KUSTOMIZATION["namespace"])


@pytest.mark.parametrize(
    "obj",
    [o for _, o in OBJECTS if not o["apiVersion"].startswith("keda.sh/")],
    ids=lambda o: f"{o['kind']}/{o['metadata']['name']}",
)
def test_manifest_matches_the_kubernetes_schema(obj: dict[str, Any]) -> None:
    kubernetes_validate = pytest.importorskip(
        "kubernetes_validate",
        reason="kubernetes-validate is not installed (pip install -e '.[test]')",
    )
    for version in (OLDEST_K8S, kubernetes_validate.latest_version()):
        kubernetes_validate.validate(obj, version, strict=True)


def test_keda_scales_the_worker_deployment_on_the_generate_queue() -> None:
    scaled = _obj("ScaledObject", "genq-worker")
    assert scaled["apiVersion"] == "keda.sh/v1alpha1"
    target = scaled["spec"]["scaleTargetRef"]
    assert target.get("kind", "Deployment") == "Deployment"
    assert _obj("Deployment", target["name"]) is not None
    # KEDA owns the count: a replicas field would reset it on every `kubectl apply`.
    assert "replicas" not in _obj("Deployment", target["name"])["spec"]

    (trigger,) = scaled["spec"]["triggers"]
    assert trigger["type"] == "redis"
    meta = trigger["metadata"]
    env = _env(_container("genq-worker"))
    model = served_name(env.get("GENQ_MODEL"), env.get("GENQ_MODEL_NAME"))
    queue = model_queue(env.get("GENQ_QUEUE") or DEFAULT_QUEUE, model)
    assert meta["listName"] == queue
    assert env["GENQ_MODELS"].split(",")[0] == model  # the API takes its jobs from the start
    # Target: one worker's worth of waiting jobs per worker.
    concurrency = _env(_container("genq-worker"))["GENQ_WORKER_CONCURRENCY"]
    assert meta["listLength"] == concurrency

    # The same Redis and db as REDIS_URL, by the full DNS name: KEDA runs in its own namespace.
    url = urlsplit(_secret_data()["REDIS_URL"])
    service = _obj("Service", url.hostname)
    fqdn = f"{url.hostname}.{KUSTOMIZATION['namespace']}.svc.cluster.local"
    assert meta["address"] == f"{fqdn}:{service['spec']['ports'][0]['port']}"
    assert url.port == service["spec"]["ports"][0]["port"]
    assert meta["databaseIndex"] == url.path.lstrip("/")


def test_keda_keeps_warm_workers_and_scales_down_slowly() -> None:
    spec = _obj("ScaledObject", "genq-worker")["spec"]
    assert spec["minReplicaCount"] >= 1  # a cold start costs minutes: never scale to zero
    assert spec["maxReplicaCount"] >= spec["minReplicaCount"]
    scale_down = spec["advanced"]["horizontalPodAutoscalerConfig"]["behavior"]["scaleDown"]
    assert scale_down["stabilizationWindowSeconds"] >= 600


def test_keda_reads_the_redis_password_from_the_secret() -> None:
    (trigger,) = _obj("ScaledObject", "genq-worker")["spec"]["triggers"]
    auth = _obj("TriggerAuthentication", trigger["authenticationRef"]["name"])
    assert auth["apiVersion"] == "keda.sh/v1alpha1"
    (ref,) = auth["spec"]["secretTargetRef"]
    assert ref["parameter"] == "password"
    assert ref["name"] == _docs(K8S / SECRET_EXAMPLE)[0]["metadata"]["name"]
    assert ref["key"] == "REDIS_PASSWORD" and ref["key"] in _secret_data()


def test_secret_example_holds_placeholders_that_agree() -> None:
    data = _secret_data()
    assert set(data) == {
        "REDIS_URL",
        "REDIS_PASSWORD",
        "GENQ_WEBHOOK_SECRET",
        "GENQ_FLOWER_BASIC_AUTH",
        "GENQ_API_KEYS",
    }
    assert all("CHANGE-ME" in value for value in data.values()), "only placeholders here"
    assert urlsplit(data["REDIS_URL"]).password == data["REDIS_PASSWORD"]


def test_worker_probes_follow_the_worker_http_contract() -> None:
    worker = _container("genq-worker")
    assert _env(worker)["GENQ_WORKER_HTTP_PORT"] == str(WORKER_PORT)
    assert _port(worker, "metrics") == WORKER_PORT
    probes = {
        kind: worker[f"{kind}Probe"]["httpGet"] for kind in ("startup", "readiness", "liveness")
    }
    for kind, probe in probes.items():
        assert _port(worker, probe["port"]) == WORKER_PORT, kind
    assert probes["readiness"]["path"] == "/readyz"  # 200 only once warm and consuming
    assert probes["liveness"]["path"] == "/healthz"
    assert probes["startup"]["path"] in ("/readyz", "/healthz")
    # Model load, compile and warm-up take minutes on a GPU: allow at least ten.
    startup = worker["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 600
    annotations = _obj("Deployment", "genq-worker")["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/port"] == str(WORKER_PORT)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_worker_has_one_gpu() -> None:
    resources = _container("genq-worker")["resources"]
    assert resources["limits"]["nvidia.com/gpu"] == 1
    assert resources.get("requests", {}).get("nvidia.com/gpu", 1) == 1


def test_worker_termination_grace_exceeds_shutdown_grace() -> None:
    pod = _obj("Deployment", "genq-worker")["spec"]["template"]["spec"]
    assert pod["terminationGracePeriodSeconds"] > _grace_s(
        "genq-worker", WorkerSettings, "shutdown_grace_s"
    )


def test_api_termination_grace_exceeds_its_shutdown_grace() -> None:
    pod = _obj("Deployment", "genq-api")["spec"]["template"]["spec"]
    grace = _grace_s("genq-api", ApiSettings, "api_shutdown_grace_s")
    assert pod["terminationGracePeriodSeconds"] > grace


def test_worker_cache_volume_is_mounted_at_genq_cache_dir() -> None:
    worker = _container("genq-worker")
    (mount,) = [
        m for m in worker["volumeMounts"] if m["mountPath"] == _env(worker)["GENQ_CACHE_DIR"]
    ]
    pod = _obj("Deployment", "genq-worker")["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == mount["name"]]
    claim = _obj("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
    # Shared by every replica, on any node: what one compiled, the others reuse.
    assert "ReadWriteMany" in claim["spec"]["accessModes"]


def test_api_is_ready_on_healthz_so_it_takes_jobs_before_a_worker_is_warm() -> None:
    api = _container("genq-api")
    port = _port(api, "http")
    assert port == int(_env(api).get("GENQ_API_PORT") or 8000)
    for kind in ("readinessProbe", "livenessProbe"):
        assert api[kind]["httpGet"]["path"] == "/healthz"
        assert _port(api, api[kind]["httpGet"]["port"]) == port


def test_flower_is_behind_auth_and_keeps_its_state_on_a_volume() -> None:
    flower = _container("genq-flower")
    env = _env(flower)
    assert "GENQ_FLOWER_BASIC_AUTH" in env and env["GENQ_FLOWER_BASIC_AUTH"] is None  # a Secret
    assert env["FLOWER_PERSISTENT"] == "true"
    mounts = [m["mountPath"] for m in flower["volumeMounts"]]
    assert any(env["FLOWER_DB"].startswith(m + "/") for m in mounts)
    for kind in ("readinessProbe", "livenessProbe"):
        assert flower[kind]["httpGet"]["path"] == "/healthcheck"  # no auth needed


def _settings_env_names() -> tuple[set[str], dict[str, set[str]]]:
    """Every variable a genq settings class reads, and, for fields that are models, their
    sub-fields (set as GENQ_<FIELD>__<SUB>)."""
    names: set[str] = set()
    nested: dict[str, set[str]] = {}
    for cls in vars(genq.contract.settings).values():
        if not (isinstance(cls, type) and issubclass(cls, BaseSettings)):
            continue
        prefix = cls.model_config.get("env_prefix", "")
        for field_name, field in cls.model_fields.items():
            alias = field.validation_alias
            if isinstance(alias, AliasChoices):
                names.update(c for c in alias.choices if isinstance(c, str))
            else:
                names.add((prefix + field_name).upper())
            annotation = field.annotation
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                nested[(prefix + field_name).upper()] = {f.upper() for f in annotation.model_fields}
    return names, nested


def _is_flower_option(name: str) -> bool:
    import flower.options  # noqa: F401, PLC0415 - defines Flower's options in tornado's registry
    from tornado.options import options  # noqa: PLC0415

    return name.removeprefix("FLOWER_").lower() in options


def test_every_genq_variable_is_a_settings_field() -> None:
    fields, nested = _settings_env_names()
    names = set(_obj("ConfigMap", "genq-config")["data"]) | set(_secret_data())
    for workload in _workloads():
        for container in workload["spec"]["template"]["spec"]["containers"]:
            if container["image"].startswith("genq-"):
                names.update(var["name"] for var in container.get("env", []))

    def known(name: str) -> bool:
        if name in fields or name == "REDIS_PASSWORD":
            return True
        head, _, sub = name.partition("__")
        if sub:
            return sub in nested.get(head, set())
        if name.startswith("FLOWER_"):
            return _is_flower_option(name)
        return name.startswith(("VLLM_", "HF_"))

    assert sorted(n for n in names if not known(n)) == []


def test_references_resolve() -> None:
    """Every ConfigMap, Secret key, claim and port that a pod or Service names exists."""
    secret = _docs(K8S / SECRET_EXAMPLE)[0]
    for workload in _workloads():
        spec = workload["spec"]
        labels = spec["template"]["metadata"]["labels"]
        assert spec["selector"]["matchLabels"].items() <= labels.items()
        pod = spec["template"]["spec"]
        claims = {t["metadata"]["name"] for t in spec.get("volumeClaimTemplates", [])}
        volumes = {v["name"] for v in pod.get("volumes", [])} | claims
        for volume in pod.get("volumes", []):
            if "persistentVolumeClaim" in volume:
                _obj("PersistentVolumeClaim", volume["persistentVolumeClaim"]["claimName"])
            if "configMap" in volume:
                _obj("ConfigMap", volume["configMap"]["name"])
        for container in pod["containers"]:
            _env(container)  # each envFrom ConfigMap exists
            for var in container.get("env", []):
                if "valueFrom" in var:
                    ref = var["valueFrom"]["secretKeyRef"]
                    assert ref["name"] == secret["metadata"]["name"]
                    assert ref["key"] in secret["stringData"]
            assert {m["name"] for m in container.get("volumeMounts", [])} <= volumes

    for _, service in OBJECTS:
        if service["kind"] != "Service":
            continue
        (target,) = [
            w
            for w in _workloads()
            if service["spec"]["selector"].items()
            <= w["spec"]["template"]["metadata"]["labels"].items()
        ]
        container = target["spec"]["template"]["spec"]["containers"][0]
        for port in service["spec"]["ports"]:
            assert _port(container, port["targetPort"]) == port["port"]


def test_redis_runs_ops_redis_conf_with_its_data_on_a_volume() -> None:
    conf = _obj("ConfigMap", "genq-redis-conf")["data"]["redis.conf"]
    assert conf == REDIS_CONF.read_text()
    assert "appendonly yes" in conf.splitlines()
    redis = _obj("StatefulSet", "genq-redis")["spec"]
    (container,) = redis["template"]["spec"]["containers"]
    (data,) = redis["volumeClaimTemplates"]
    assert {"name": data["metadata"]["name"], "mountPath": "/data"} in container["volumeMounts"]
    assert "--requirepass" in container["args"]
