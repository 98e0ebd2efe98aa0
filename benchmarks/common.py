"""What the benchmark scripts share: the machine line and a results.json that is saved after every step."""

from __future__ import annotations

import json
import os
import pathlib
import platform

import torch

from backdoorlab.io import atomic_write_json


def cpu_model() -> str:
    """The CPU's model name (/proc/cpuinfo), or the platform's processor string elsewhere."""
    try:
        for line in pathlib.Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown CPU"


def machine() -> str:
    """Where a number was measured. The CPU model and the kernel set matter: float results (and so seeded
    training runs) are bit-identical only on the same kind of CPU."""
    return (f"{platform.machine()}, {cpu_model()} ({torch.backends.cpu.get_cpu_capability()}), {os.cpu_count()} CPU "
            f"cores, torch {torch.__version__}, {torch.get_num_threads()} threads")


def open_results(out: str) -> tuple[pathlib.Path, dict, callable]:
    """Create ``out``; return it, the results already in ``out/results.json`` (a rerun resumes) and a function
    that saves them atomically."""
    out_dir = pathlib.Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    return out_dir, results, lambda: atomic_write_json(path, results)
