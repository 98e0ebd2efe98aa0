"""``backdoorlab repair`` (and ``sanitize``): repair one or two suspect checkpoints with a registered defense on
a clean budget drawn from their held-out pool, evaluate before and after, save the repaired model.

Every defense goes through :func:`repair_run`; one that traces a path in weight space (the mode-connectivity
sanitizer) also gets the test set to report the path on, may reuse a second endpoint, and has its path, curve and
second endpoint written by :mod:`.sanitize`.
"""

from __future__ import annotations

import dataclasses
import pathlib
import time

from .. import __version__
from ..attacks import backdoor_of
from ..augment import AUGMENTATIONS
from ..checkpoint_data import checkpoint_clean_budget
from ..data.registry import sanitizer_augmentation, training_augmentation
from ..defenses import finetune
from ..device import computes_on_device
from ..defenses.repair import REPAIRERS, run_repairer
from ..errors import BackdoorlabError
from ..io import atomic_write_json
from ..metrics import evaluate
from ..models import check_same_architecture, create_model, load_for, save_checkpoint
from ..models.sidecar import build_sidecar, holdout_size, inherited_fields, provenance, training
from ..train import TrainConfig
from . import sanitize as path_outputs
from .outputs import check_out_dir, model_arch


def default_repair_options(name: str, dataset_name: str) -> dict:
    """Data-set dependent defaults of a repairer: the augmentation of its training steps. The repairers that
    learn new features from the budget (the sanitizer's curve and second endpoint, FST's shifted features) use the
    sanitizer's small-budget augmentation; those that only adjust the suspect use its training augmentation."""
    entry = REPAIRERS.entry(name)
    if "augment" not in entry.config.option_names():
        return {}
    if entry.traits["learns_features"]:
        return {"augment": sanitizer_augmentation(dataset_name)}
    return {"augment": training_augmentation(dataset_name)}


def resolve_bn_augment(cfg, meta: dict):
    """``bn_augment="auto"``: re-estimate batch norm on budget images augmented as the suspect's training data
    was (its recorded augmentation), since that is what its running statistics describe."""
    if getattr(cfg, "bn_augment", None) != "auto":
        return cfg
    trained = training(meta).get("augment") or "none"
    return dataclasses.replace(cfg, bn_augment=trained if trained in AUGMENTATIONS else "none")


@computes_on_device
def repair_run(dataset, name: str, model_dirs: list[str], budget_size: int, out: str | None = None,
               options: dict | None = None, backdoor=None, budget_seed: int = 0, progress: bool = True,
               reuse_second_endpoint: str | None = None, command: str = "repair", device=None,
               arch: str | None = None) -> dict:
    """Repair suspect checkpoint(s) with defense ``name`` on a clean budget; evaluate before and after.

    Writes the repaired checkpoint, ``report.json`` and ``config.json`` to ``out`` (if given) and returns the
    report: ``before`` (one entry per suspect), ``after``, ``info`` (what the defense chose) and ``seconds``. A
    defense that traces a path also writes ``path.json``, ``path.png``, ``curve.safetensors`` and (one suspect,
    scratch endpoint) ``second-endpoint/``, and its report carries ``summary`` (what ``path.json`` holds).
    ``reuse_second_endpoint``: such a saved endpoint (or the run directory holding it), reused when it was made
    for the same budget and recipe. ``command`` names the command in ``config.json`` (``repair`` or
    ``sanitize``: the same run). ``device`` (None: auto) and ``amp``: where the models run and whether training
    steps use mixed precision."""
    entry = REPAIRERS.entry(name)
    if not 1 <= len(model_dirs) <= 2:
        raise BackdoorlabError(f"{command} takes one or two models, got {len(model_dirs)}")
    options = {**default_repair_options(name, dataset.name), **(options or {})}
    cfg = entry.config.from_dict(options, owner=name)  # validate before any work
    traces_path = entry.traits["traces_path"]
    if reuse_second_endpoint is not None and not traces_path:
        raise BackdoorlabError(f"{name} makes no second endpoint to reuse")
    check_out_dir(out, command, model_dirs)
    named_arch = arch  # what the caller named (needed to load a model of the user's own code)
    loaded = [load_for(p, dataset, named_arch) for p in model_dirs]
    for model, _ in loaded:
        model.to(device)
    metas = [m for _, m in loaded]
    cfg = resolve_bn_augment(cfg, metas[0])
    if len(loaded) == 2:
        check_same_architecture(*metas)
    holdout = holdout_size(metas[0], dataset.name)
    budget = checkpoint_clean_budget(dataset, metas[0], budget_size, budget_seed)
    if backdoor is None:
        backdoor = backdoor_of(metas[0])
    arch, args = metas[0]["arch"], metas[0]["arch_args"]
    test = (dataset.test_x, dataset.test_y)
    context, record = None, None
    if traces_path:
        record = path_outputs.second_endpoint_record(metas[0], dataset.name, budget_size, budget_seed, holdout, cfg)
        reused = None
        if reuse_second_endpoint is not None:  # the sanitizer refuses it with two suspects or a non-scratch method
            reused = path_outputs.load_second_endpoint(reuse_second_endpoint, dataset, record, named_arch).to(device)
        context = {"test": test, "backdoor": backdoor, "num_classes": dataset.num_classes, "second_model": reused,
                   "artifacts": {}}
    before = [evaluate(m, *test, backdoor, dataset.num_classes) for m, _ in loaded]
    tick = time.time()
    model, info = run_repairer(entry, loaded[0][0], budget, cfg, loaded[1][0] if len(loaded) == 2 else None,
                               progress=progress, model_factory=lambda: create_model(arch, **args),
                               path_context=context)
    seconds = time.time() - tick
    artifacts = context["artifacts"] if traces_path else {}
    after = evaluate(model, *test, backdoor, dataset.num_classes)
    report = {"defense": name, "before": before, "after": after, "seconds": round(seconds, 1), "info": info,
              "clean_budget": budget_size}
    second = None
    if traces_path:
        second = path_outputs.evaluate_second_endpoint(artifacts.get("second_model"), info, dataset, backdoor)
        report["summary"] = path_outputs.summary(info, cfg, before, second, after, len(model_dirs),
                                                 reused=reuse_second_endpoint if context["second_model"] is not None
                                                 else None)
    if out is None:
        return report
    out_dir = pathlib.Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    saved_arch, saved_args = model_arch(model, arch, args)
    # each command's own record, as it has always written it: sanitize's "sanitized", repair's "repaired"
    if command == "sanitize":
        records = {"sanitized": path_outputs.sanitized_record(info, cfg, model_dirs, budget_size)}
    else:
        records = {"repaired": {"defense": name, "from": [str(p) for p in model_dirs], "clean_budget": budget_size,
                                "info": {k: v for k, v in info.items() if k not in ("path", "config")}}}
    inherited = inherited_fields(metas[0])
    meta = build_sidecar(saved_arch, saved_args, dataset.name, **inherited, seed=cfg.seed,
                         provenance={**provenance(metas[0]), **records}, metrics=after)
    save_checkpoint(model, out_dir, meta)
    config = {"command": command, "defense": name, "models": [str(p) for p in model_dirs], "dataset": dataset.name,
              "clean_budget": budget_size, "budget_seed": budget_seed, "holdout": holdout, "options": cfg.to_dict(),
              "evaluated_backdoor": backdoor.to_dict() if backdoor else None, "backdoorlab_version": __version__}
    if traces_path:
        config |= {"reused_second_endpoint": report["summary"]["reused_second_endpoint"], "sanitizer": cfg.to_dict()}
        path_outputs.write(out_dir, report["summary"], artifacts, cfg, record, second, inherited,
                           title=f"{cfg.curve} curve, {dataset.name}, {arch}, clean budget {budget_size}",
                           arch=arch, args=args, dataset_name=dataset.name)
    atomic_write_json(out_dir / "report.json", report)
    atomic_write_json(out_dir / "config.json", config)
    return report


@computes_on_device
def finetune_run(dataset, model_dir: str, budget_size: int, cfg: TrainConfig, backdoor=None, budget_seed: int = 0,
                 progress: bool = True, device=None, arch: str | None = None) -> dict:
    """Fine-tuning baseline with an explicit training recipe on the same clean budget (for comparison tables);
    returns the metrics of the fine-tuned model."""
    model, meta = load_for(model_dir, dataset, arch)
    model.to(device)
    budget = checkpoint_clean_budget(dataset, meta, budget_size, budget_seed)
    tuned = finetune(model, budget.x, budget.y, cfg, progress=progress)
    return evaluate(tuned, dataset.test_x, dataset.test_y, backdoor or backdoor_of(meta), dataset.num_classes)
