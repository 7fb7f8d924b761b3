"""How long this process has lived: the first phase of a start-up table. Standard library only
(psutil as a fallback), so that a benchmark's child process can import it for free."""

from __future__ import annotations

import os
import time
from pathlib import Path


def process_age_s() -> float:
    """Seconds since this process started. Linux: from /proc in clock ticks (10 ms); psutil's
    create_time() rests on a boot time rounded to the second, too coarse for a phase table."""
    try:
        after_name = Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()
        start_ticks = int(after_name[19])  # field 22, starttime
        return time.clock_gettime(time.CLOCK_BOOTTIME) - start_ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError, AttributeError):
        import psutil  # noqa: PLC0415 - not Linux

        return time.time() - psutil.Process().create_time()
