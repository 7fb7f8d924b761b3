"""Values that `genq up` makes once and keeps under the data dir (the embedded Redis's password,
the webhook signing secret, Flower's login): a file of its own each, readable by its owner only
(mode 0600), so that a restart finds the same value and a user can read it."""

from __future__ import annotations

import os
from collections.abc import Callable
from pathlib import Path


def load_or_create(path: Path, make: Callable[[], str]) -> tuple[str, bool]:
    """The value kept at ``path``, made by ``make()`` on first use. Returns it and whether it was
    just made."""
    if path.exists():
        return path.read_text().strip(), False
    path.parent.mkdir(parents=True, exist_ok=True)
    value = make()
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(value + "\n")
    return value, True
