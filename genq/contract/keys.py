"""API keys: made by ``genq keys create NAME``, kept only as SHA-256 hashes with their names in a
JSON file (``GENQ_API_KEYS_FILE``, mode 0600) or in ``GENQ_API_KEYS`` (the same JSON, e.g. from a
Kubernetes Secret), and checked by the API (api.auth).

The file::

    {"keys": [{"name": "ci", "sha256": "<hex>", "created_at": "2026-11-27T03:01:30Z",
               "rate_limit_rps": null, "rate_limit_burst": null, "max_active_jobs": null}]}

The three limits are per-key overrides of ``GENQ_RATE_LIMIT_RPS``, ``GENQ_RATE_LIMIT_BURST`` and
``GENQ_MAX_ACTIVE_JOBS_PER_KEY`` (null: the setting).
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import secrets
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timezone
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

API_KEY_PREFIX = "gq_"
# A key's name ends up in Redis key names and job records: keep it plain.
NAME_PATTERN = r"^[A-Za-z0-9][A-Za-z0-9_.-]{0,63}$"


class KeysError(Exception):
    """A keys file or GENQ_API_KEYS that cannot be used, or a name taken or unknown."""


class ApiKey(BaseModel):
    """One key, as stored: its name and the hash of the key, never the key."""

    model_config = ConfigDict(extra="forbid")

    name: str = Field(pattern=NAME_PATTERN)
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$")
    created_at: datetime
    rate_limit_rps: float | None = Field(None, gt=0)
    rate_limit_burst: int | None = Field(None, ge=1)
    max_active_jobs: int | None = Field(None, ge=1)


class KeysFile(BaseModel):
    """The keys file's content (and GENQ_API_KEYS's)."""

    model_config = ConfigDict(extra="forbid")

    keys: list[ApiKey] = Field(default_factory=list)

    @model_validator(mode="after")
    def _unique(self) -> KeysFile:
        names = [k.name for k in self.keys]
        if len(set(names)) != len(names):
            raise ValueError("key names must be unique")
        if len({k.sha256 for k in self.keys}) != len(self.keys):
            raise ValueError("the same key is listed twice")
        return self


def new_key() -> str:
    """256 random bits, URL-safe: ``gq_`` + 43 characters."""
    return API_KEY_PREFIX + secrets.token_urlsafe(32)


def key_hash(key: str) -> str:
    # Unsalted SHA-256 is the right hash here: a salt and a slow KDF (bcrypt, argon2) protect
    # low-entropy passwords from guessing; a 256-bit random key cannot be guessed, from its hash
    # or otherwise, and a fast hash keeps the check cheap on every request.
    return hashlib.sha256(key.encode()).hexdigest()


def read_keys(path: Path) -> KeysFile | None:
    """The file's keys; None when there is no file."""
    try:
        text = path.read_text()
    except FileNotFoundError:
        return None
    try:
        return KeysFile.model_validate_json(text)
    except ValidationError as exc:
        raise KeysError(f"{path} is not a valid keys file: {exc}") from None


def _write_keys(path: Path, keys: KeysFile) -> None:
    # A new file, mode 0600 from its creation, then renamed over the old one: a reader (the API
    # reloads the file when it changes) sees the old keys or the new ones, never half a file.
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(keys.model_dump_json(indent=1) + "\n")
        out.flush()
        os.fsync(out.fileno())
    os.replace(tmp, path)


@contextmanager
def _locked(path: Path) -> Iterator[KeysFile]:
    """The file's keys, under an exclusive lock: two ``genq keys create`` at once both land."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path.with_name(path.name + ".lock"), os.O_WRONLY | os.O_CREAT, 0o600)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield read_keys(path) or KeysFile()
    finally:
        os.close(fd)  # releases the lock


def create_key(
    path: Path,
    name: str,
    *,
    rate_limit_rps: float | None = None,
    rate_limit_burst: int | None = None,
    max_active_jobs: int | None = None,
    taken: frozenset[str] = frozenset(),
) -> str:
    """Make a key called ``name``, store its hash in ``path`` and return the key: the only time
    it exists outside its holder. ``taken``: names used elsewhere (GENQ_API_KEYS)."""
    key = new_key()
    try:
        entry = ApiKey(
            name=name,
            sha256=key_hash(key),
            created_at=datetime.now(timezone.utc),
            rate_limit_rps=rate_limit_rps,
            rate_limit_burst=rate_limit_burst,
            max_active_jobs=max_active_jobs,
        )
    except ValidationError as exc:
        raise KeysError(f"invalid key {name!r}: {exc.errors()[0]['msg']}") from None
    with _locked(path) as keys:
        if name in taken or any(k.name == name for k in keys.keys):
            raise KeysError(f"a key named {name!r} exists already")
        keys.keys.append(entry)
        _write_keys(path, keys)
    return key


def revoke_key(path: Path, name: str) -> None:
    """Remove the key called ``name`` from ``path``. An API reloads the file within a second."""
    with _locked(path) as keys:
        kept = [k for k in keys.keys if k.name != name]
        if len(kept) == len(keys.keys):
            raise KeysError(f"no key named {name!r} in {path}")
        _write_keys(path, KeysFile(keys=kept))


class KeyRing:
    """The keys one API process accepts, found by hash.

    A dict lookup by hash, not a constant-time comparison: what a timing difference could leak is
    how much of a *hash* of the caller's own input matches a stored hash, which tells nothing
    about any key (finding an input whose hash shares a prefix with a stored one gets no closer
    to a preimage). And it stays O(1) for any number of keys on the 2,000 jobs/s path.
    """

    def __init__(self, keys: list[ApiKey]):
        self._by_hash = {k.sha256: k for k in keys}
        self._by_name = {k.name: k for k in keys}

    def __len__(self) -> int:
        return len(self._by_hash)

    def authenticate(self, key: str) -> ApiKey | None:
        return self._by_hash.get(key_hash(key))

    def named(self, name: str) -> ApiKey | None:
        return self._by_name.get(name)


def key_ring(file: KeysFile | None, env: KeysFile | None) -> KeyRing | None:
    """The keys of the file and of GENQ_API_KEYS together; None when neither is configured (dev
    mode). A file with no key left is configured: it refuses every request."""
    if file is None and env is None:
        return None
    keys = (file.keys if file else []) + (env.keys if env else [])
    try:
        KeysFile(keys=keys)  # names and keys unique across both
    except ValidationError as exc:
        raise KeysError(
            f"the keys file and GENQ_API_KEYS together: {exc.errors()[0]['msg']}"
        ) from None
    return KeyRing(keys)
