"""One calling convention for every repairer: ``repair(name, suspect, budget, suspect_b=None, **options)``.

Each repairer takes the suspect model(s) and the same :class:`CleanBudget`, knows nothing of the trigger, and
returns ``(model, info)``: a standalone model (of the suspect's architecture, or for mode connectivity possibly
an :class:`~backdoorlab.models.Ensemble` of two models of it) and a JSON-able dict saying what it
did (layer pruned, threshold chosen, t picked, ...). Options are the fields of the repairer's config dataclass,
with the papers' defaults; an unknown option is a one-line error listing the valid ones.

Repairers live in :data:`REPAIRERS`; each module registers its own, as
``@REPAIRERS.register(name, ConfigClass, description, **traits)`` on a function called as
``fn(suspect, budget, cfg, *, progress)``, plus ``suspect_b=`` and ``model_factory=`` when it takes two
models. The package ``backdoorlab.defenses`` imports every repairer's module, in the order they are listed.
"""

from __future__ import annotations

from torch import nn

from ..budget import CleanBudget
from ..config import Config
from ..errors import BackdoorlabError
from ..registry import Registry

REPAIRERS = Registry("defense", traits={
    # takes a second suspect model (suspect_b) and a model_factory besides the suspect
    "two_models": False,
    # learns new features from the budget: its training steps default to the sanitizer's small-budget
    # augmentation instead of the suspect's training augmentation (runs.default_repair_options)
    "learns_features": False,
    # traces a path in weight space: also takes test=, backdoor=, num_classes= (to report the path on test data,
    # never to choose), second_model= (an endpoint made earlier, reused) and artifacts= (a dict that receives, for
    # the run to save, curve_control and second_model; see mode_connectivity.sanitize_as_repairer); its info
    # carries the path
    "traces_path": False,
})


def repairer_config(name: str, **options) -> Config:
    """The config dataclass of repairer ``name`` built from ``options`` (validated)."""
    return REPAIRERS.config(name, **options)


def repairer_defaults(name: str) -> dict:
    return REPAIRERS.defaults(name)


def repair(name: str, suspect: nn.Module, budget: CleanBudget, suspect_b: nn.Module | None = None, *,
           progress: bool = True, model_factory=None, path_context: dict | None = None,
           **options) -> tuple[nn.Module, dict]:
    """Run repairer ``name`` on ``suspect`` (and ``suspect_b``, for mode connectivity) with the clean ``budget``.

    ``path_context``: for a repairer that traces a path (trait ``traces_path``), its ``test``, ``backdoor``,
    ``num_classes``, ``second_model`` and ``artifacts`` keywords."""
    entry = REPAIRERS.entry(name)
    cfg = entry.config.from_dict(options, owner=name)
    return run_repairer(entry, suspect, budget, cfg, suspect_b, progress=progress, model_factory=model_factory,
                        path_context=path_context)


def run_repairer(entry, suspect: nn.Module, budget: CleanBudget, cfg: Config, suspect_b: nn.Module | None = None, *,
                 progress: bool = True, model_factory=None, path_context: dict | None = None
                 ) -> tuple[nn.Module, dict]:
    """Call a registry ``entry`` with a built config, passing each keyword only to the repairers whose traits
    take it."""
    kwargs = {}
    if entry.traits["two_models"]:
        kwargs.update(suspect_b=suspect_b, model_factory=model_factory)
    elif suspect_b is not None:
        raise BackdoorlabError(f"{entry.name} repairs one model; only "
                               f"{' and '.join(REPAIRERS.names(two_models=True))} takes two")
    if entry.traits["traces_path"]:
        kwargs.update(path_context or {})
    return entry.run(suspect, budget, cfg, progress=progress, **kwargs)
