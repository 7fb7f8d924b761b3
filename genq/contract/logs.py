"""How every genq process logs: one format, the level from its settings (``GENQ_LOG_LEVEL``)."""

from __future__ import annotations

import logging


def configure_logging(level: str) -> None:
    logging.basicConfig(
        level=level.upper(),
        format="%(asctime)s %(levelname)s [%(processName)s %(name)s] %(message)s",
    )
