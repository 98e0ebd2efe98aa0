"""Defenses: repairers (take suspect model(s) and a clean budget, return a model).

Importing the package imports every module in it (:func:`~backdoorlab.registry.import_plugins`), which
registers every repairer in ``repair.REPAIRERS`` (each module registers its own): a new repairer is one new file.
The detectors are in :mod:`backdoorlab.detectors`; Neural Cleanse's algorithm, which its detector shares with a
repairer, stays here (:mod:`.neural_cleanse`).
"""

from ..registry import import_plugins

# every module of the package, which registers its repairer; the built-in ones in listing order
import_plugins(__name__, first=("finetune", "fst", "pruning", "anp", "neural_cleanse", "pam", "ibau", "noise",
                                "mode_connectivity"))
from .finetune import finetune
from .mode_connectivity import (ModeConnectivitySanitizer, SanitizerConfig, SanitizeResult, select_t,
                                select_t_from_rows, select_ts, select_ts_from_rows)

__all__ = ["finetune", "ModeConnectivitySanitizer", "SanitizerConfig", "SanitizeResult", "select_t", "select_t_from_rows",
           "select_ts", "select_ts_from_rows"]
