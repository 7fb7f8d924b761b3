"""`genq flower`: the flags it gives Flower for each setting, its refusal to run without a password
outside dev, and agreement with what docker-compose.yml and ops/k8s set for Flower. Flower itself
runs in tests/e2e/test_flower_browser.py."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from genq.cli.main import flower_args
from genq.contract.settings import FlowerSettings, UpSettings

REPO = Path(__file__).resolve().parents[2]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """Only what a test sets: no GENQ_* or FLOWER_* variable of the shell running the tests."""
    for name in list(os.environ):
        if name.startswith(("GENQ_", "FLOWER_")) or name in ("REDIS_URL", "XDG_DATA_HOME"):
            monkeypatch.delenv(name)
    monkeypatch.setenv("GENQ_DATA_DIR", str(tmp_path / "data"))


def _flags(args: list[str]) -> dict[str, str]:
    assert args[0] == "flower"
    return dict(a.removeprefix("--").split("=", 1) for a in args[1:])


def test_outside_dev_flower_needs_a_password(monkeypatch: pytest.MonkeyPatch) -> None:
    assert FlowerSettings().env == "prod"  # the default: a forgotten variable fails closed
    with pytest.raises(RuntimeError, match="GENQ_FLOWER_BASIC_AUTH=user:password"):
        flower_args(FlowerSettings())
    monkeypatch.setenv("GENQ_FLOWER_BASIC_AUTH", "")  # compose passes an unset variable as ""
    with pytest.raises(RuntimeError, match="needs a password outside dev"):
        flower_args(FlowerSettings())
    monkeypatch.setenv("GENQ_FLOWER_BASIC_AUTH", "admin:s3cret,ops:other")
    assert _flags(flower_args(FlowerSettings()))["basic-auth"] == "admin:s3cret,ops:other"


def test_in_dev_flower_runs_without_a_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("GENQ_ENV", "dev")
    assert "basic-auth" not in _flags(flower_args(FlowerSettings()))
    monkeypatch.setenv("GENQ_FLOWER_BASIC_AUTH", "admin:s3cret")  # still used when given
    assert _flags(flower_args(FlowerSettings()))["basic-auth"] == "admin:s3cret"


def test_genq_up_is_dev_unless_told(monkeypatch: pytest.MonkeyPatch) -> None:
    assert UpSettings().env == "dev"
    monkeypatch.setenv("GENQ_ENV", "prod")
    assert UpSettings().env == "prod"
    monkeypatch.setenv("GENQ_ENV", "staging")
    with pytest.raises(ValueError, match="dev"):
        FlowerSettings()


def test_the_refusal_is_one_clear_line_and_exit_code_2(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("GENQ_", "FLOWER_", "REDIS_"))}
    env |= {"REDIS_URL": "redis://127.0.0.1:1/0", "GENQ_DATA_DIR": str(tmp_path)}
    done = subprocess.run(
        [sys.executable, "-m", "genq.cli.main", "flower"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1] == (
        "genq flower: Flower needs a password outside dev: set "
        "GENQ_FLOWER_BASIC_AUTH=user:password (or GENQ_ENV=dev on a machine of your own; "
        "`genq up` does)"
    )
    assert not (tmp_path / "flower").exists()


def test_state_is_kept_under_the_data_dir_by_default(tmp_path: Path) -> None:
    flags = _flags(flower_args(FlowerSettings(env="dev")))
    assert flags["persistent"] == "True"
    assert flags["db"] == str(tmp_path / "data" / "flower" / "flower.db")
    assert (flags["address"], flags["port"]) == ("127.0.0.1", "5555")


def test_flowers_own_variables_and_genqs_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    """Flower reads FLOWER_<option> itself, and a flag would override it: `genq flower` reads
    FLOWER_PERSISTENT and FLOWER_DB as its own settings, so the flags say the same."""
    monkeypatch.setenv("FLOWER_DB", "/data/flower.db")
    assert _flags(flower_args(FlowerSettings(env="dev")))["db"] == "/data/flower.db"
    monkeypatch.setenv("GENQ_FLOWER_DB", "/elsewhere/flower.db")  # genq's name first
    assert _flags(flower_args(FlowerSettings(env="dev")))["db"] == "/elsewhere/flower.db"
    monkeypatch.setenv("FLOWER_PERSISTENT", "false")
    flags = _flags(flower_args(FlowerSettings(env="dev")))
    assert flags["persistent"] == "False" and "db" not in flags


def test_every_flag_is_a_flower_option() -> None:
    import flower.options  # noqa: F401, PLC0415 - defines Flower's options in tornado's registry
    from tornado.options import options  # noqa: PLC0415

    flags = _flags(flower_args(FlowerSettings(flower_basic_auth="a:b")))
    assert {name.replace("-", "_") for name in flags} <= set(options)


def _deployed_flower_env(variables: dict[str, str | None], monkeypatch: pytest.MonkeyPatch):
    for name, value in variables.items():
        if value is not None and name.startswith(("GENQ_", "FLOWER_")):
            monkeypatch.setenv(name, value)
    monkeypatch.setenv("GENQ_FLOWER_BASIC_AUTH", "admin:from-a-secret")
    return _flags(flower_args(FlowerSettings()))


def test_compose_keeps_flowers_state_on_its_volume(monkeypatch: pytest.MonkeyPatch) -> None:
    service = yaml.safe_load((REPO / "docker-compose.yml").read_text())["services"]["flower"]
    flags = _deployed_flower_env(service["environment"], monkeypatch)
    assert flags["persistent"] == "True"
    mounts = [v.split(":")[1] for v in service["volumes"]]
    assert any(flags["db"].startswith(m + "/") for m in mounts), (flags["db"], mounts)
    assert "GENQ_FLOWER_BASIC_AUTH" in service["environment"]  # passed on from the shell


def test_k8s_keeps_flowers_state_on_its_volume(monkeypatch: pytest.MonkeyPatch) -> None:
    docs = yaml.safe_load_all((REPO / "ops" / "k8s" / "flower.yaml").read_text())
    (deployment,) = [d for d in docs if d and d["kind"] == "Deployment"]
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    env = {v["name"]: v.get("value") for v in container["env"]}
    flags = _deployed_flower_env(env, monkeypatch)
    assert flags["persistent"] == "True"
    mounts = [m["mountPath"] for m in container["volumeMounts"]]
    assert any(flags["db"].startswith(m + "/") for m in mounts), (flags["db"], mounts)


def test_an_empty_genq_env_is_unset(monkeypatch: pytest.MonkeyPatch) -> None:
    """Compose passes ``GENQ_ENV:`` on as "" where the shell has it empty."""
    monkeypatch.setenv("GENQ_ENV", "")
    assert FlowerSettings().env == "prod"
    assert UpSettings().env == "dev"
