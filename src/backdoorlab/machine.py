"""Which host and CPU a result came from, recorded next to the results of a sweep or a federation: float sums,
and so seeded results, are bit-identical only on the same kind of CPU."""

from __future__ import annotations

import pathlib
import platform
import socket


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), or the platform's processor string elsewhere."""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def machine() -> str:
    """``host, CPU model``."""
    return f"{socket.gethostname()}, {cpu_model()}"
