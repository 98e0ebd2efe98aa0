"""One calling convention for every repairer: ``repair(name, suspect, budget, suspect_b=None, **options)``.

Each repairer takes the suspect model(s) and the same :class:`CleanBudget`, knows nothing of the trigger, and
returns ``(model, info)``: a standalone model (of the suspect's architecture, or for mode connectivity possibly
an :class:`~backdoorlab.models.Ensemble` of two models of it) and a JSON-able dict saying what it
did (layer pruned, threshold chosen, t picked, ...). Options are the fields of the repairer's config dataclass,
with the papers' defaults; an unknown option is a one-line error listing the valid ones.
"""

from __future__ import annotations

import dataclasses

from torch import nn

from ..budget import CleanBudget
from ..errors import BackdoorlabError, valid_names
from .anp import ANPConfig, anp
from .finetune import FinetuneConfig, finetune
from .fst import FSTConfig, feature_shift_tuning
from .ibau import IBAUConfig, ibau
from .mode_connectivity import ModeConnectivitySanitizer, SanitizerConfig
from .noise import NoiseConfig, gaussian_noise
from .pruning import FinePruningConfig, fine_prune


def _finetune(model, budget, cfg: FinetuneConfig, progress=True, **_):
    return finetune(model, budget.x, budget.y, cfg.train_config(), progress=progress), {"config": cfg.to_dict()}


def _mode_connectivity(model, budget, cfg: SanitizerConfig, progress=True, suspect_b=None, model_factory=None):
    result = ModeConnectivitySanitizer(cfg, model_factory, progress=progress).sanitize(model, budget, suspect_b)
    return result.model, {"t": result.t, "ensemble": result.ensemble_ts, "second_endpoint": result.second_endpoint,
                          "path": result.path, "stages": result.stages, "refined": result.refined,
                          "refine_check": result.refine_check, "verdict": result.verdict,
                          "unit_groups": result.unit_groups,
                          "seconds": {k: round(v, 1) for k, v in result.seconds.items()}, "config": cfg.to_dict()}


def _nc_unlearning(model, budget, cfg, progress=True, **_):
    from .neural_cleanse import nc_unlearning
    return nc_unlearning(model, budget, cfg, progress=progress)


def _nc_config():
    from .neural_cleanse import UnlearningConfig
    return UnlearningConfig


REPAIRERS = {  # name -> (config class or a function returning it, function, takes two suspect models)
    "finetune": (FinetuneConfig, _finetune, False),
    "fst": (FSTConfig, lambda m, b, c, progress=True, **_: feature_shift_tuning(m, b, c, progress=progress), False),
    "fine-pruning": (FinePruningConfig, lambda m, b, c, progress=True, **_: fine_prune(m, b, c, progress=progress),
                     False),
    "anp": (ANPConfig, lambda m, b, c, progress=True, **_: anp(m, b, c, progress=progress), False),
    "nc-unlearning": (_nc_config, _nc_unlearning, False),
    "i-bau": (IBAUConfig, lambda m, b, c, progress=True, **_: ibau(m, b, c, progress=progress), False),
    "noise": (NoiseConfig, lambda m, b, c, progress=True, **_: gaussian_noise(m, b, c, progress=progress), False),
    "mode-connectivity": (SanitizerConfig, _mode_connectivity, True),
}


def repairer_config(name: str, **options):
    """The config dataclass of repairer ``name`` built from ``options`` (validated)."""
    if name not in REPAIRERS:
        raise BackdoorlabError(f"unknown defense {name!r}; valid: {valid_names(REPAIRERS)}")
    cls = REPAIRERS[name][0]
    cls = cls if dataclasses.is_dataclass(cls) else cls()
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(options) - set(fields))
    if unknown:
        raise BackdoorlabError(f"unknown option(s) {', '.join(unknown)} for {name}; valid: {valid_names(fields)}")
    return cls(**options)


def repairer_defaults(name: str) -> dict:
    return repairer_config(name).to_dict()


def repair(name: str, suspect: nn.Module, budget: CleanBudget, suspect_b: nn.Module | None = None, *,
           progress: bool = True, model_factory=None, **options) -> tuple[nn.Module, dict]:
    """Run repairer ``name`` on ``suspect`` (and ``suspect_b``, for mode connectivity) with the clean ``budget``."""
    cfg = repairer_config(name, **options)
    _, fn, two = REPAIRERS[name]
    if suspect_b is not None and not two:
        raise BackdoorlabError(f"{name} repairs one model; only mode-connectivity takes two")
    if two:
        return fn(suspect, budget, cfg, progress=progress, suspect_b=suspect_b, model_factory=model_factory)
    return fn(suspect, budget, cfg, progress=progress)
