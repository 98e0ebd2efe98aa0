"""What the benchmark scripts share: the machine line and a results.json that is saved after every step."""

from __future__ import annotations

import json
import os
import pathlib
import platform

import torch

from backdoorlab.io import atomic_write_json


def machine() -> str:
    return f"{platform.machine()}, {os.cpu_count()} CPU cores, torch {torch.__version__}, {torch.get_num_threads()} threads"


def open_results(out: str) -> tuple[pathlib.Path, dict, callable]:
    """Create ``out``; return it, the results already in ``out/results.json`` (a rerun resumes) and a function
    that saves them atomically."""
    out_dir = pathlib.Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    return out_dir, results, lambda: atomic_write_json(path, results)
