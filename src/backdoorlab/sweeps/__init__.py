"""Attack x defense sweeps: a TOML grid (:mod:`.config`) planned into content-keyed jobs (:mod:`.grid`), run as
Ray tasks (:mod:`.engine`, each job by :mod:`.cells` through the same runs the CLI uses) and written up as
results.csv, results.json, results.md and index.html (:mod:`.report`).

This package calls :mod:`backdoorlab.runs`, as the CLI does; no library module imports it. Ray is imported only
when a sweep runs (``pip install 'backdoorlab[distributed]'``)."""

from .config import SweepConfig, load_sweep_config, parse_sweep_config
from .engine import run_sweep
from .grid import plan

__all__ = ["SweepConfig", "load_sweep_config", "parse_sweep_config", "plan", "run_sweep"]
