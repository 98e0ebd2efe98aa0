"""Defenses: repairers (take suspect model(s) and a clean budget, return a model).

Importing the package registers every repairer in ``repair.REPAIRERS``, in the order ``backdoorlab list`` shows
them (each module registers its own). The detectors are in :mod:`backdoorlab.detectors`; Neural Cleanse's
algorithm, which its detector shares with a repairer, stays here (:mod:`.neural_cleanse`).
"""

# the repairers' modules, which register them, in listing order
from . import finetune, fst, pruning, anp, neural_cleanse, ibau, noise, mode_connectivity  # noqa: F401
from .finetune import finetune
from .mode_connectivity import (ModeConnectivitySanitizer, SanitizerConfig, SanitizeResult, select_t,
                                select_t_from_rows, select_ts, select_ts_from_rows)

__all__ = ["finetune", "ModeConnectivitySanitizer", "SanitizerConfig", "SanitizeResult", "select_t", "select_t_from_rows",
           "select_ts", "select_ts_from_rows"]
