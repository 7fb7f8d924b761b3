"""The API process must never load torch or vLLM (nor the worker package)."""

from __future__ import annotations

import os
import subprocess
import sys


def test_importing_and_building_the_api_loads_no_heavy_module() -> None:
    code = (
        "import sys\n"
        "from api.app import create_app\n"
        "from genq.contract.settings import ApiSettings\n"
        "create_app(ApiSettings(redis_url='redis://127.0.0.1:1/0'))\n"
        "heavy = sorted(m for m in ('torch', 'vllm', 'transformers', 'worker') if m in sys.modules)\n"
        "# The CLI, `genq up` and the model's files load torch only when a command needs it.\n"
        "import genq.cli.main, genq.cli.up, worker.model_files\n"
        "heavy += sorted(m for m in ('torch', 'vllm', 'transformers') if m in sys.modules)\n"
        "print(','.join(heavy))\n"
    )
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True
    ).stdout.strip()
    assert out == ""


def test_the_webhooks_process_loads_no_engine() -> None:
    """It runs beside the API on small machines: no torch, no vLLM, none of the engine's code."""
    code = (
        "import sys\n"
        "import genq.webhooks.app\n"
        "heavy = ('torch', 'vllm', 'transformers', 'worker.host.engine', 'worker.host.runtime')\n"
        "print(','.join(sorted(m for m in heavy if m in sys.modules)))\n"
    )
    env = {**os.environ, "REDIS_URL": "redis://127.0.0.1:1/0"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout.strip()
    assert out == ""
