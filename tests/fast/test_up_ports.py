"""`genq up` refuses to start where a port it would listen on is taken: another program there
would answer in genq's place (even its /readyz), so it says which port and which variable to
change, exits 2, and has started nothing (no embedded Redis, no data directory)."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from genq.store.embedded import free_port


@pytest.mark.parametrize("variable", ["GENQ_API_PORT", "GENQ_FLOWER_PORT", "GENQ_WORKER_HTTP_PORT"])
def test_a_taken_port_is_refused_before_anything_starts(tmp_path: Path, variable: str) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "GENQ_REDIS_URL")}
    env |= {
        "GENQ_API_PORT": str(free_port()),
        "GENQ_FLOWER_PORT": str(free_port()),
        "GENQ_DATA_DIR": str(tmp_path / "data"),
    }
    with socket.socket() as other:
        other.bind(("127.0.0.1", 0))
        other.listen()
        port = other.getsockname()[1]
        env[variable] = str(port)
        done = subprocess.run(
            [sys.executable, "-m", "genq.cli.main", "up"],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
    assert done.returncode == 2, done.stdout + done.stderr
    assert f"genq: port {port} on " in done.stderr and f"is in use (set {variable})" in done.stderr
    assert "embedded Redis" not in done.stdout
    assert not (tmp_path / "data").exists()
