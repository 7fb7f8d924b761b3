"""API keys at rest (genq.contract.keys) and `genq keys`: only hashes are stored, in a 0600 file; names
are unique across the file and GENQ_API_KEYS; a key is found by its hash."""

from __future__ import annotations

import hashlib
import json
import stat
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from genq.cli import main as cli
from genq.contract import keys
from genq.contract.keys import KeysError, KeysFile, create_key, key_ring, read_keys, revoke_key


def test_a_key_is_256_random_bits_and_only_its_hash_is_stored(tmp_path: Path) -> None:
    path = tmp_path / "sub" / "api_keys.json"
    key = create_key(path, "ci", rate_limit_rps=5, max_active_jobs=3)
    assert key.startswith("gq_") and len(key) == 3 + 43  # token_urlsafe(32): 43 characters
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    text = path.read_text()
    assert key not in text and key[3:] not in text
    digest = hashlib.sha256(key.encode()).hexdigest()
    (entry,) = json.loads(text)["keys"]
    assert entry["name"] == "ci" and entry["sha256"] == digest
    assert entry["rate_limit_rps"] == 5 and entry["max_active_jobs"] == 3
    assert entry["rate_limit_burst"] is None
    other = create_key(path, "batch")
    assert other != key
    assert [k.name for k in read_keys(path).keys] == ["ci", "batch"]
    assert not list(tmp_path.glob("sub/.*.tmp"))  # written through a temporary file, renamed


def test_names_are_unique_plain_and_revocable(tmp_path: Path) -> None:
    path = tmp_path / "api_keys.json"
    create_key(path, "alice")
    with pytest.raises(KeysError, match="exists already"):
        create_key(path, "alice")
    with pytest.raises(KeysError, match="exists already"):
        create_key(path, "bob", taken=frozenset({"bob"}))  # a name GENQ_API_KEYS uses
    for bad in ("", "has space", "a:b", "-lead", "x" * 65):
        with pytest.raises(KeysError, match="invalid key"):
            create_key(path, bad)
    revoke_key(path, "alice")
    assert read_keys(path).keys == []
    with pytest.raises(KeysError, match="no key named 'alice'"):
        revoke_key(path, "alice")


def test_concurrent_creates_all_land(tmp_path: Path) -> None:
    path = tmp_path / "api_keys.json"
    with ThreadPoolExecutor(8) as pool:
        made = list(pool.map(lambda i: create_key(path, f"k{i}"), range(16)))
    ring = key_ring(read_keys(path), None)
    assert len(ring) == 16
    assert {ring.authenticate(k).name for k in made} == {f"k{i}" for i in range(16)}


def test_the_ring_finds_keys_by_hash_from_the_file_and_the_environment(tmp_path: Path) -> None:
    path = tmp_path / "api_keys.json"
    assert read_keys(path) is None
    assert key_ring(None, None) is None  # nothing configured: dev mode
    file_key = create_key(path, "from-file")
    env_path = tmp_path / "env.json"
    env_key = create_key(env_path, "from-env", rate_limit_burst=7)
    env = KeysFile.model_validate_json(env_path.read_text())  # what GENQ_API_KEYS holds
    ring = key_ring(read_keys(path), env)
    assert ring.authenticate(file_key).name == "from-file"
    assert ring.authenticate(env_key).name == "from-env"
    assert ring.named("from-env").rate_limit_burst == 7
    assert ring.authenticate(file_key + "x") is None
    assert ring.authenticate("") is None
    with pytest.raises(KeysError, match="unique"):
        key_ring(read_keys(path), read_keys(path))
    # Revoking the last key leaves a configured ring that accepts nothing, not dev mode.
    revoke_key(path, "from-file")
    empty = key_ring(read_keys(path), None)
    assert empty is not None and len(empty) == 0


def test_a_broken_keys_file_is_refused_with_its_path(tmp_path: Path) -> None:
    path = tmp_path / "api_keys.json"
    path.write_text('{"keys": [{"name": "x", "sha256": "not-hex"}]}')
    with pytest.raises(KeysError, match=str(path)):
        read_keys(path)
    path.write_text("{not json")
    with pytest.raises(KeysError, match="not a valid keys file"):
        read_keys(path)


def test_genq_keys_create_list_revoke(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    path = tmp_path / "api_keys.json"
    monkeypatch.setenv("GENQ_API_KEYS_FILE", str(path))
    assert cli.main(["keys", "list"]) == 0
    assert "dev mode" in capsys.readouterr().out

    assert cli.main(["keys", "create", "ci", "--rps", "2", "--max-active", "4"]) == 0
    out, err = capsys.readouterr()
    key = out.strip()  # stdout is the key alone
    assert key.startswith("gq_") and "\n" not in key
    assert "never shown again" in err
    assert key_ring(read_keys(path), None).authenticate(key).name == "ci"

    assert cli.main(["keys", "create", "ci"]) == 1
    assert "exists already" in capsys.readouterr().err

    assert cli.main(["keys", "list"]) == 0
    listed = capsys.readouterr().out
    assert listed.startswith("ci\t") and "rps=2 " in listed and "max_active=4" in listed
    assert keys.key_hash(key) not in listed and key not in listed

    assert cli.main(["keys", "revoke", "ci"]) == 0
    capsys.readouterr()
    assert cli.main(["keys", "revoke", "ci"]) == 1
    assert "no key named 'ci'" in capsys.readouterr().err


def test_the_k8s_secret_placeholder_is_refused_not_taken_for_a_key(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import yaml  # noqa: PLC0415

    from genq.contract.settings import ApiSettings  # noqa: PLC0415

    secret = yaml.safe_load((Path(__file__).parents[2] / "ops/k8s/secret.example.yaml").read_text())
    monkeypatch.setenv("GENQ_API_KEYS", secret["stringData"]["GENQ_API_KEYS"])
    with pytest.raises(ValueError, match="sha256"):
        ApiSettings()
    monkeypatch.setenv("GENQ_API_KEYS", '{"keys": []}')
    assert ApiSettings().api_keys == KeysFile()
