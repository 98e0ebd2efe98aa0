"""Defenses: repairers (take suspect model(s) and a clean budget, return a model) and detectors."""

from .finetune import finetune
from .mode_connectivity import (ModeConnectivitySanitizer, SanitizerConfig, SanitizeResult, select_t,
                                select_t_from_rows, select_ts, select_ts_from_rows)

__all__ = ["finetune", "ModeConnectivitySanitizer", "SanitizerConfig", "SanitizeResult", "select_t", "select_t_from_rows",
           "select_ts", "select_ts_from_rows"]
