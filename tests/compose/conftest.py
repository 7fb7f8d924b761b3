"""The stack that `docker compose --profile cpu up` runs, reached the way a user reaches it: through
the ports docker-compose.yml publishes on this host, and with the docker compose commands an
operator types. ops/docker/compose-check.sh builds and starts it, runs these tests, and takes it
down; without that stack they are skipped (they are not in `make test`'s test paths).
"""

from __future__ import annotations

import os
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import yaml

from tests.e2e.conftest import wait_for_job, wait_until

REPO = Path(__file__).resolve().parents[2]
COMPOSE = yaml.safe_load((REPO / "docker-compose.yml").read_text())
PROJECT = COMPOSE["name"]
PROFILE = ("--profile", "cpu")
WORKER = "worker-cpu"
RECEIVER = "genq-hook-receiver"  # a container on the stack's network: GENQ_WEBHOOK_ALLOW_HOSTS


def published(service: str) -> str:
    """http://127.0.0.1:<host port> of a service's one published port."""
    (mapping,) = COMPOSE["services"][service]["ports"]
    host_port = mapping.split(":")[-2]
    return f"http://127.0.0.1:{host_port}"


def compose(*args: str, timeout_s: float = 300) -> str:
    """`docker compose --profile cpu ARGS` in the repository, as an operator runs it."""
    done = subprocess.run(
        ["docker", "compose", *PROFILE, *args],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        check=False,
    )
    assert done.returncode == 0, f"docker compose {' '.join(args)}: {done.stderr}"
    return done.stdout


def docker(*args: str) -> str:
    done = subprocess.run(["docker", *args], capture_output=True, text=True, check=False)
    assert done.returncode == 0, f"docker {' '.join(args)}: {done.stderr}"
    return done.stdout.strip()


def container_of(service: str) -> str:
    (container,) = compose("ps", "-q", service).split()
    return container


def healthy(service: str) -> bool:
    state = docker("inspect", "-f", "{{.State.Health.Status}}", container_of(service))
    return state == "healthy"


@dataclass
class Stack:
    api: str
    flower: str
    prometheus: str
    flower_auth: tuple[str, str]
    webhook_secret: str

    def job(self, job_id: str) -> dict:
        return httpx.get(f"{self.api}/v1/jobs/{job_id}", timeout=10).json()

    def submit(self, **body: object) -> dict:
        response = httpx.post(f"{self.api}/v1/jobs", json=body, timeout=10)
        assert response.status_code == 202, response.text
        return response.json()

    def wait_for_job(self, job_id: str, timeout_s: float = 180) -> dict:
        return wait_for_job(self.api, job_id, timeout_s)


@pytest.fixture(scope="session")
def stack() -> Stack:
    if not os.environ.get("GENQ_COMPOSE_CHECK"):
        pytest.skip("no compose stack: ops/docker/compose-check.sh (make compose-test) runs these")
    user, _, password = os.environ["GENQ_FLOWER_BASIC_AUTH"].partition(":")
    return Stack(
        api=published("api"),
        flower=published("flower"),
        prometheus=published("prometheus"),
        flower_auth=(user, password),
        webhook_secret=os.environ["GENQ_WEBHOOK_SECRET"],
    )


@dataclass
class HookReceiver:
    url: str  # as the stack's containers reach it
    published: str  # as this host reaches it

    def received(self) -> list[dict]:
        return httpx.get(f"{self.published}/received", timeout=10).json()


@pytest.fixture(scope="session")
def hook_receiver(stack: Stack) -> Iterator[HookReceiver]:
    """tests/compose/hook_receiver.py in a container of genq's API image on the stack's network."""
    script = REPO / "tests" / "compose" / "hook_receiver.py"
    docker("rm", "-f", RECEIVER)
    docker(
        "run", "-d", "--name", RECEIVER, "--network", f"{PROJECT}_default",
        "-p", "127.0.0.1::8080", "-v", f"{script}:/hook_receiver.py:ro",
        "genq-api", "python", "/hook_receiver.py",
    )  # fmt: skip
    port = docker("port", RECEIVER, "8080/tcp").rsplit(":", 1)[-1]
    receiver = HookReceiver(
        url=f"http://{RECEIVER}:8080/hook", published=f"http://127.0.0.1:{port}"
    )
    wait_until(lambda: isinstance(receiver.received(), list), 30, "the webhook receiver listening")
    yield receiver
    docker("rm", "-f", RECEIVER)
