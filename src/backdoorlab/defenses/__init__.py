"""Defenses: repairers (take suspect model(s) and a clean budget, return a model) and detectors.

Importing the package registers every repairer in ``repair.REPAIRERS`` and every detector in
``detectors.DETECTORS``, in the order ``backdoorlab list`` shows them (each module registers its own).
"""

# the repairers' and detectors' modules, which register them, in listing order
from . import finetune, fst, pruning, anp, neural_cleanse, ibau, noise, mode_connectivity  # noqa: F401
from . import strip, poison_detection  # noqa: F401
from .finetune import finetune
from .mode_connectivity import (ModeConnectivitySanitizer, SanitizerConfig, SanitizeResult, select_t,
                                select_t_from_rows, select_ts, select_ts_from_rows)

__all__ = ["finetune", "ModeConnectivitySanitizer", "SanitizerConfig", "SanitizeResult", "select_t", "select_t_from_rows",
           "select_ts", "select_ts_from_rows"]
