"""ops/docker/compose-check.sh on a machine where no Docker engine can run: it says why and skips
(exit 0), rather than failing somewhere inside. The real run is `make compose-test`."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

from tests.fast.test_compose import REPO

# What the script needs before it decides; docker, dockerd and apt-get are left out on purpose.
TOOLS = ("bash", "dirname", "uname", "id", "grep", "modprobe", "cat", "mktemp", "rm")


def test_without_docker_or_a_way_to_install_it_the_check_says_why_and_skips(
    tmp_path: Path,
) -> None:
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in TOOLS:
        if found := shutil.which(tool):
            (bin_dir / tool).symlink_to(found)
    done = subprocess.run(
        ["bash", str(REPO / "ops" / "docker" / "compose-check.sh")],
        env={
            "PATH": str(bin_dir),
            "DOCKER_HOST": f"unix://{tmp_path}/no-engine.sock",
            "GENQ_DOCKER_DIR": str(tmp_path / "docker"),
        },
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr
    (line,) = [ln for ln in done.stdout.splitlines() if "SKIPPED" in ln]
    assert line.startswith("compose-check: SKIPPED: no Docker engine can run on this machine: ")
    assert line.endswith(
        (
            "not root: cannot start dockerd",
            "no dockerd and no apt-get to install Debian's docker.io",
        )
    )
