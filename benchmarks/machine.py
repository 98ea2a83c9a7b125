"""The machine a benchmark ran on, for its JSON: the CPU's model name and core count (Linux's
/proc/cpuinfo; ``platform.processor()`` is empty there)."""

from __future__ import annotations

import os
import platform
from pathlib import Path


def cpu() -> str:
    try:
        names = [line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                 if line.startswith("model name")]  # fmt: skip
    except OSError:
        names = []
    return f"{names[0] if names else platform.processor() or platform.machine()}, {os.cpu_count()} cores"
