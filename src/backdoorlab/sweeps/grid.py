"""A sweep's grid as jobs: the models to make (suspects, clean bases, second suspects) and the cells to measure,
each named by the hash of its full recipe.

A model's key is the hash of what makes it (data set, architecture, training recipe, attack and its options,
seed; for an attack on weights, the key of the clean model it starts from), so two cells that need the same
suspect share one model, trained once, and a rerun with one more defense trains nothing. A cell's key is the hash
of its own recipe and its models' keys. Keys do not depend on labels or on the order of the grid.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
from ..errors import BackdoorlabError
from .config import AttackSpec, SweepConfig

KEY_LENGTH = 16


def recipe_key(recipe: dict) -> str:
    """The content hash of a JSON-able recipe (its canonical JSON: sorted keys, no spaces)."""
    text = json.dumps(recipe, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:KEY_LENGTH]


@dataclasses.dataclass(frozen=True)
class Job:
    """A model to make (``kind`` "model") or a cell to measure ("suspect", "defense", "detector"); ``needs``:
    the keys of the models it reads; ``labels``: where it sits in the results table."""

    key: str
    kind: str
    recipe: dict
    needs: tuple[str, ...] = ()
    labels: dict = dataclasses.field(default_factory=dict)


def _train_recipe(config: SweepConfig, dataset: str, arch: str, seed: int) -> dict:
    from ..runs import train_config
    t = config.train
    cfg = train_config(dataset, arch, t.get("epochs"), t.get("lr"), t.get("batch_size"), t.get("augment"),
                       seed=seed, **{k: t[k] for k in ("schedule", "weight_decay") if k in t})
    return dataclasses.asdict(cfg)


def plan(config: SweepConfig) -> tuple[dict[str, Job], list[Job]]:
    """The models (by key) and the cells, in grid order: data set, architecture, attack, seed, then the suspect
    row, each defense, each detector."""
    models: dict[str, Job] = {}
    cells: list[Job] = []

    def model(dataset: str, arch: str, attack: AttackSpec, seed: int) -> str:
        base = {"dataset": dataset, "arch": arch, "seed": seed}
        if attack.kind == "model":
            clean = model(dataset, arch, AttackSpec("clean", "none", "clean", {}), seed)
            recipe = {**base, "make": "attack", "from": clean, "attack": attack.name,
                      "options": dict(attack.options)}
            needs = (clean,)
        else:
            recipe = {**base, "make": "train", "train": _train_recipe(config, dataset, arch, seed),
                      "attack": None if attack.kind == "clean" else attack.name,
                      "options": dict(attack.options)}
            needs = ()
        key = recipe_key(recipe)
        models.setdefault(key, Job(key, "model", recipe, needs))
        return key

    by_label = {a.label: a for a in config.attacks}
    for dataset in config.datasets:
        for arch in config.archs:
            for attack in config.attacks:
                score = None  # the backdoor a clean row is measured against
                if attack.kind == "clean" and attack.score_with is not None:
                    other = by_label[attack.score_with]
                    score = {"attack": other.name, "kind": other.kind, "options": dict(other.options)}
                for seed in config.seeds:
                    suspect = model(dataset, arch, attack, seed)
                    labels = {"dataset": dataset, "arch": arch, "seed": seed, "attack": attack.label}
                    _cell(cells, "suspect", {"model": suspect, "score_with": score}, (suspect,),
                          {**labels, "defense": "none", "budget": None, "budget_seed": None})
                    for budget in config.budgets:
                        at = {**labels, "budget": budget, "budget_seed": config.budget_seed}
                        for defense in config.defenses:
                            suspects = [suspect]
                            if defense.suspects == 2:
                                if attack.kind == "model":
                                    continue  # one attacked model: a second suspect would be another attack
                                suspects.append(model(dataset, arch, attack, seed + 1))
                            recipe = {"models": suspects, "defense": defense.name, "options": dict(defense.options),
                                      "budget": budget, "budget_seed": config.budget_seed, "score_with": score,
                                      "retune": dict(config.retune) if config.retune is not None else None}
                            _cell(cells, "defense", recipe, tuple(suspects), {**at, "defense": defense.label})
                        for detector in config.detectors:
                            recipe = {"model": suspect, "detector": detector.name, "options": dict(detector.options),
                                      "budget": budget, "budget_seed": config.budget_seed}
                            _cell(cells, "detector", recipe, (suspect,), {**at, "defense": detector.label})
    return models, _unique(cells)


def _cell(cells: list, kind: str, recipe: dict, needs: tuple, labels: dict) -> None:
    recipe = {"cell": kind, **recipe}
    cells.append(Job(recipe_key(recipe), kind, recipe, needs, labels))


def _unique(cells: list[Job]) -> list[Job]:
    """``cells``, refused when two labels name the same recipe (the same cell measured twice under two names)."""
    seen: dict[str, Job] = {}
    for c in cells:
        if c.key in seen:
            first = seen[c.key].labels
            raise BackdoorlabError(f"{first['attack']} / {first['defense']} and {c.labels['attack']} / "
                                   f"{c.labels['defense']} are the same cell (same recipe): remove one")
        seen[c.key] = c
    return cells
