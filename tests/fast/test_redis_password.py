"""A Redis that requires a password: the embedded one keeps it off the command line, clients
connect through ``redis://:PASSWORD@...``, and every role refuses a wrong or missing password at
start with one readable line (not a traceback, not a retry loop)."""

from __future__ import annotations

import os
import signal
import stat
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis

from genq.store.embedded import EmbeddedRedis, free_port, load_or_create_password
from genq.store.redis_client import credentials_problem, redacted, sync_redis
from tests.conftest import MODEL_QUEUE

PASSWORD = 'pa:ss/w"rd'  # characters a URL must percent-encode


@pytest.fixture(scope="module")
def locked(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmbeddedRedis]:
    server = EmbeddedRedis(tmp_path_factory.mktemp("locked"), password=PASSWORD).start()
    yield server
    server.stop()


def test_the_password_is_required_and_kept_off_the_command_line(locked: EmbeddedRedis) -> None:
    assert sync_redis(locked.url).ping()
    with pytest.raises(redis.AuthenticationError):
        redis.Redis.from_url(locked.public_url).ping()
    cmdline = Path(f"/proc/{locked.process.pid}/cmdline").read_bytes()
    assert PASSWORD.encode() not in cmdline
    assert stat.S_IMODE((locked.dir / "auth.conf").stat().st_mode) == 0o600
    assert PASSWORD not in redacted(locked.url) and "***" in redacted(locked.url)


def test_credentials_problem_names_the_cause_and_hides_the_password(locked: EmbeddedRedis) -> None:
    assert credentials_problem(locked.url) is None
    missing = credentials_problem(locked.public_url)
    assert "requires a password and the URL has none" in missing
    wrong = credentials_problem(f"redis://:nope@127.0.0.1:{locked.port}/0")
    assert "refused the password" in wrong and "nope" not in wrong
    # Unreachable is not a credentials problem: the roles' own retries wait for Redis.
    assert credentials_problem(f"redis://:nope@127.0.0.1:{free_port()}/0") is None


def test_genq_up_keeps_one_password_per_data_dir(tmp_path: Path) -> None:
    first = load_or_create_password(tmp_path)
    assert len(first) >= 32 and load_or_create_password(tmp_path) == first
    assert stat.S_IMODE((tmp_path / "redis" / "password").stat().st_mode) == 0o600


@pytest.mark.parametrize("role", ["api", "worker", "webhooks", "flower"])
@pytest.mark.parametrize("password", ["wrong", None])
def test_each_role_refuses_a_bad_password_in_one_line(
    locked: EmbeddedRedis, role: str, password: str | None
) -> None:
    auth = f":{password}@" if password else ""
    env = {
        **os.environ,
        "REDIS_URL": f"redis://{auth}127.0.0.1:{locked.port}/0",
        "GENQ_ENV": "dev",  # Flower without basic auth
        "GENQ_API_PORT": str(free_port()),
        "GENQ_FLOWER_PORT": str(free_port()),
    }
    done = subprocess.run(
        [sys.executable, "-m", "genq.cli.main", role],
        env=env,
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2, done.stderr
    assert "Traceback" not in done.stderr
    (line,) = [ln for ln in done.stderr.splitlines() if ln.startswith(f"genq {role}: ")]
    assert f"Redis at redis://{':***@' if password else ''}127.0.0.1:{locked.port}/0" in line
    assert "password" in line
    if password:
        assert password not in line.replace("password", "")


def test_flower_reads_the_queues_through_the_password(
    locked: EmbeddedRedis, tmp_path: Path
) -> None:
    """Flower connects twice: Celery's events (kombu) and its own Redis client for queue lengths,
    which parses the URL itself; both must take the percent-encoded password."""
    port = free_port()
    env = {
        **os.environ,
        "REDIS_URL": locked.url,
        "GENQ_ENV": "dev",
        "GENQ_FLOWER_PORT": str(port),
        "GENQ_DATA_DIR": str(tmp_path),
        "FLOWER_UNAUTHENTICATED_API": "true",
    }
    log = tmp_path / "flower.log"
    with log.open("wb") as out:
        flower = subprocess.Popen(
            [sys.executable, "-m", "genq.cli.main", "flower"],
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            assert flower.poll() is None and time.monotonic() < deadline, log.read_text()
            try:
                if httpx.get(f"http://127.0.0.1:{port}/healthcheck").status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(0.2)
        queues = httpx.get(f"http://127.0.0.1:{port}/api/queues/length")
        assert queues.status_code == 200
        assert {"name": MODEL_QUEUE, "messages": 0} in queues.json()["active_queues"]
        assert PASSWORD not in httpx.get(f"http://127.0.0.1:{port}/broker").text
    finally:
        os.killpg(flower.pid, signal.SIGTERM)
        flower.wait(30)
    assert f"Connected to redis://:**@127.0.0.1:{locked.port}/0" in log.read_text()
