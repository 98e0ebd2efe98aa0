"""End-to-end runs shared by the CLI, the demo and the benchmarks: train, evaluate, sanitize.

Each run returns plain dicts and saves its outputs with their configuration next to them.
"""

from __future__ import annotations

import dataclasses
import json
import os
import pathlib
import time

import torch
import safetensors.torch

from . import __version__
from .attacks import backdoor_from_dict
from .budget import clean_budget, default_holdout, training_part
from .defenses import ModeConnectivitySanitizer, SanitizerConfig, finetune
from .errors import BackdoorlabError, valid_names
from .io import atomic_path, atomic_write_json
from .metrics import evaluate
from .models import Ensemble, create_model, list_models, load_checkpoint, save_checkpoint
from .models.checkpoint import META_FILE, read_meta
from .models.sidecar import (SECOND_ENDPOINT_ORDER, build_sidecar, dataset_fields, derived_sidecar, holdout_record,
                             holdout_size, inherited_fields, planted_attack, provenance as provenance_of,
                             training as training_of, training_record)
from .report import plot_path, plot_stages
from .train import TrainConfig, train_model

# Training defaults per (data set, architecture): what reaches the benchmark targets on a 2-core CPU.
TRAIN_DEFAULTS = {
    ("mnist", "small-cnn"): dict(epochs=3, lr=0.05, batch_size=128),
    ("fashion-mnist", "small-cnn"): dict(epochs=5, lr=0.05, batch_size=128),
    ("digits", "small-cnn"): dict(epochs=40, lr=0.05, batch_size=64),
    ("cifar10", "*"): dict(epochs=20, lr=0.1, batch_size=128, augment="crop-flip-jpeg", channels_last=True),
}


def train_defaults(dataset: str, arch: str) -> dict:
    return dict(TRAIN_DEFAULTS.get((dataset, arch)) or TRAIN_DEFAULTS.get((dataset, "*")) or
                dict(epochs=10, lr=0.05, batch_size=128))


def train_config(dataset: str, arch: str, epochs=None, lr=None, batch_size=None, augment=None, **fixed) -> TrainConfig:
    """The training recipe for ``arch`` on ``dataset``: the defaults of :func:`train_defaults`, overridden by the
    given (non-None) ``epochs``, ``lr``, ``batch_size`` and ``augment``; ``fixed``: further TrainConfig fields
    (schedule, weight_decay, seed, ...)."""
    if arch not in list_models():
        raise BackdoorlabError(f"unknown architecture {arch!r}; valid: {valid_names(list_models())}")
    d = train_defaults(dataset, arch)
    for k, v in dict(epochs=epochs, lr=lr, batch_size=batch_size, augment=augment).items():
        if v is not None:
            d[k] = v
    d.setdefault("augment", "none")
    if d["epochs"] < 1:
        raise BackdoorlabError(f"--epochs must be >= 1, got {d['epochs']}")
    return TrainConfig(**fixed, **d)


def arch_args(dataset) -> dict:
    return dict(num_classes=dataset.num_classes, in_channels=dataset.in_channels,
                input_size=list(dataset.image_size), mean=list(dataset.mean), std=list(dataset.std))


def new_model(arch: str, dataset, seed: int = 0, **extra) -> torch.nn.Module:
    torch.manual_seed(seed)
    return create_model(arch, **arch_args(dataset), **extra)


def check_model_fits(meta: dict, dataset, where: str) -> None:
    """Raise if a checkpoint's input shape or class count does not fit ``dataset``."""
    a = meta["arch_args"]
    want = (dataset.in_channels, *dataset.image_size, dataset.num_classes)
    got = (a["in_channels"], *a["input_size"], a["num_classes"])
    if tuple(want) != tuple(got):
        raise BackdoorlabError(f"{where} takes {got[0]}x{got[1]}x{got[2]} images with {got[3]} classes, but "
                               f"{dataset.name} has {want[0]}x{want[1]}x{want[2]} images with {want[3]} classes")


def backdoor_of(meta: dict):
    """The backdoor recorded in a checkpoint's provenance, or None."""
    attack = planted_attack(meta)
    return backdoor_from_dict(attack) if attack else None


def train_run(dataset, arch: str, cfg: TrainConfig, attack=None, out: str | None = None, holdout: int | None = None,
              progress: bool = True, desc: str = "train", model_args: dict | None = None
              ) -> tuple[torch.nn.Module, dict]:
    """Train ``arch`` on the non-held-out training images of ``dataset``, poisoned by ``attack`` if given.

    ``model_args`` go to :func:`create_model` (e.g. ``dropout``); an attack may add its own (``model_args()``),
    poison the data (``poison``) and hook into the training batches (``batch_hook``)."""
    check_out_dir(out, "train")
    holdout = default_holdout(dataset.name) if holdout is None else holdout
    x, y = training_part(dataset, holdout)
    provenance, hook, extra = {"attack": None}, None, dict(model_args or {})
    if attack is not None and hasattr(attack, "model_args"):
        extra.update(attack.model_args())
    model = new_model(arch, dataset, cfg.seed, **extra)
    if attack is not None:
        poisoned = attack.poison(x, y, dataset.num_classes, seed=cfg.seed)
        x, y = poisoned.x, poisoned.y
        hook = attack.batch_hook(poisoned, model) if hasattr(attack, "batch_hook") else None
        provenance = {"attack": attack.to_dict(), "poisoned": len(poisoned.poisoned), "poison_seed": cfg.seed}
    tick = time.time()
    history = train_model(model, x, y, cfg, progress=progress, desc=desc, batch_hook=hook)
    seconds = time.time() - tick
    backdoor = attack.backdoor if attack is not None else None
    metrics = evaluate(model, dataset.test_x, dataset.test_y, backdoor, dataset.num_classes)
    meta = build_sidecar(arch, model.arch_args, dataset.name, **dataset_fields(dataset), seed=cfg.seed,
                         training=training_record(cfg, len(y), seconds, history), holdout=holdout_record(holdout),
                         provenance=provenance, metrics=metrics)
    if out is not None:
        save_checkpoint(model, out, meta)
    return model, meta


def written_by(out_dir: pathlib.Path, meta: dict) -> str:
    """Which command wrote the checkpoint in ``out_dir`` (its sidecar ``meta``): the ``command`` of the
    ``config.json`` that sanitize, repair and attack write next to it, else ``train`` (which writes none)."""
    try:
        command = json.loads((out_dir / "config.json").read_text()).get("command")
    except (OSError, ValueError, AttributeError):
        command = None
    if command in ("sanitize", "repair", "attack"):
        return command
    return "sanitize" if "second_endpoint" in provenance_of(meta) else "train"


def check_out_dir(out: str | os.PathLike | None, command: str, inputs=()) -> None:
    """Refuse, before any work, an output directory whose checkpoint would be lost: one of the ``inputs`` (the
    model being read), or a directory holding a checkpoint that another command wrote (``backdoorlab train``'s
    model in ``runs/clean``, say). A directory that the same command wrote before is overwritten: a rerun."""
    if out is None:
        return
    out_dir = pathlib.Path(out)
    if not out_dir.exists():
        return
    for p in inputs:
        src = pathlib.Path(p)
        src = src.parent if src.is_file() else src
        if src.exists() and out_dir.resolve() == src.resolve():
            raise BackdoorlabError(f"--out {out} is the model directory {p} being read; writing there would replace "
                                   "that model: choose another --out")
    if not (out_dir / META_FILE).is_file():
        return
    try:
        previous = written_by(out_dir, read_meta(out_dir))
    except BackdoorlabError:
        raise BackdoorlabError(f"--out {out} already holds {META_FILE}, not a readable backdoorlab checkpoint: "
                               "choose another --out or remove it") from None
    if previous != command:
        raise BackdoorlabError(f"--out {out} already holds a model written by `backdoorlab {previous}`; "
                               f"`backdoorlab {command}` would replace it: choose another --out or remove it")


def model_arch(model: torch.nn.Module, arch: str, args: dict) -> tuple[str, dict]:
    """The (arch, arch_args) to save ``model`` under: its own for an :class:`~backdoorlab.models.Ensemble` (a
    sanitizer's average of two path points), else the suspect's ``arch`` / ``args`` it was made from."""
    if isinstance(model, Ensemble):
        if getattr(model, "arch", None) is None:
            raise BackdoorlabError("cannot save an ensemble whose members are not one registry architecture")
        return model.arch, model.arch_args
    return arch, args


def load_for(path: str, dataset, arch: str | None = None) -> tuple[torch.nn.Module, dict]:
    """Load a checkpoint and check it fits ``dataset`` (named data set and input shape)."""
    model, meta = load_checkpoint(path, arch=arch, dataset=dataset.name)
    check_model_fits(meta, dataset, f"checkpoint {path}")
    return model, meta


def resolve_bn_augment(cfg: SanitizerConfig, meta: dict) -> SanitizerConfig:
    """``bn_augment="auto"``: re-estimate batch norm on budget images augmented as the suspect's training data
    was (its recorded augmentation), since that is what its running statistics describe."""
    if cfg.bn_augment != "auto":
        return cfg
    from .augment import AUGMENTATIONS
    trained = training_of(meta).get("augment") or "none"
    return dataclasses.replace(cfg, bn_augment=trained if trained in AUGMENTATIONS else "none")


SECOND_ENDPOINT_DIR = "second-endpoint"


def second_endpoint_record(meta: dict, dataset_name: str, budget_size: int, budget_seed: int, holdout: int,
                           cfg: SanitizerConfig) -> dict:
    """Everything a scratch-trained second endpoint depends on: the architecture, the budget (which images, how
    they are split) and the training recipe, not the suspect. Saved with the endpoint, compared on reuse."""
    return {"method": cfg.second_endpoint, "dataset": dataset_name, "arch": meta["arch"],
            "arch_args": meta.get("arch_args") or {}, "clean_budget": budget_size, "budget_seed": budget_seed,
            "holdout": holdout, "val_fraction": cfg.val_fraction, "min_val": cfg.min_val, "steps": cfg.second_steps,
            "lr": cfg.second_lr, "weight_decay": cfg.weight_decay, "batch_size": cfg.batch_size,
            "augment": cfg.augment, "seed": cfg.seed}


def load_second_endpoint(path: str, dataset, record: dict) -> torch.nn.Module:
    """Load a second endpoint saved by an earlier :func:`sanitize_run` (its ``second-endpoint`` directory, or the
    run's directory holding it) and check it was made for ``record``'s budget and recipe."""
    d = pathlib.Path(path)
    if (d / SECOND_ENDPOINT_DIR / "model.json").exists():  # the sanitize run's directory
        d = d / SECOND_ENDPOINT_DIR
    model, meta = load_for(str(d), dataset)
    saved = provenance_of(meta).get("second_endpoint")
    if saved is None:
        raise BackdoorlabError(f"{d} is not a second endpoint saved by sanitize (no provenance.second_endpoint "
                               f"record in its model.json)")
    diff = sorted(k for k in set(saved) | set(record) if saved.get(k) != record.get(k))
    if diff:
        raise BackdoorlabError(f"second endpoint {d} was made for another budget or recipe: " + ", ".join(
            f"{k} {saved.get(k)!r} there, {record.get(k)!r} here" for k in diff))
    return model


def sanitize_run(dataset, model_dirs: list[str], budget_size: int, out: str, cfg: SanitizerConfig,
                 backdoor=None, budget_seed: int = 0, progress: bool = True,
                 reuse_second_endpoint: str | None = None) -> dict:
    """Sanitize one or two suspect checkpoints; write the model, path.json, path.png, curve and config to ``out``.

    With one suspect the second endpoint the sanitizer makes is saved too (``out/second-endpoint``);
    ``reuse_second_endpoint`` (such a directory, or the run directory holding it) skips training it again when
    it was made for the same budget and recipe (checked; scratch-trained endpoints only).
    """
    if not 1 <= len(model_dirs) <= 2:
        raise BackdoorlabError(f"sanitize takes one or two models, got {len(model_dirs)}")
    check_out_dir(out, "sanitize", model_dirs)
    loaded = [load_for(p, dataset) for p in model_dirs]
    metas = [m for _, m in loaded]
    if len(loaded) == 2 and (metas[0]["arch"], metas[0]["arch_args"]) != (metas[1]["arch"], metas[1]["arch_args"]):
        raise BackdoorlabError(f"the two models have different architectures ({metas[0]['arch']} vs "
                               f"{metas[1]['arch']}); a curve needs two models of the same architecture")
    holdout = holdout_size(metas[0], dataset.name)
    budget = clean_budget(dataset, budget_size, seed=budget_seed, holdout=holdout)
    if backdoor is None:
        backdoor = backdoor_of(metas[0])
    arch, args = metas[0]["arch"], metas[0]["arch_args"]
    cfg = resolve_bn_augment(cfg, metas[0])
    factory = lambda: create_model(arch, **args)  # noqa: E731
    sanitizer = ModeConnectivitySanitizer(cfg, factory, progress=progress)
    test = (dataset.test_x, dataset.test_y)
    record = second_endpoint_record(metas[0], dataset.name, budget_size, budget_seed, holdout, cfg)
    reused = None
    if reuse_second_endpoint is not None:  # the sanitizer refuses it with two suspects or a non-scratch method
        reused = load_second_endpoint(reuse_second_endpoint, dataset, record)
    endpoints = [evaluate(m, *test, backdoor, dataset.num_classes) for m, _ in loaded]
    result = sanitizer.sanitize(loaded[0][0], budget, loaded[1][0] if len(loaded) == 2 else None, test=test,
                                backdoor=backdoor, num_classes=dataset.num_classes, second_model=reused)
    final = evaluate(result.model, *test, backdoor, dataset.num_classes)
    if result.second_endpoint is not None:
        endpoints.append(evaluate(result.second_model, *test, backdoor, dataset.num_classes)
                         | {"made_by": result.second_endpoint})
    out_dir = pathlib.Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    config = {"command": "sanitize", "models": [str(p) for p in model_dirs], "dataset": dataset.name,
              "clean_budget": budget_size, "budget_seed": budget_seed, "holdout": holdout,
              "reused_second_endpoint": str(reuse_second_endpoint) if reused is not None else None,
              "sanitizer": cfg.to_dict(), "evaluated_backdoor": backdoor.to_dict() if backdoor else None,
              "backdoorlab_version": __version__}
    refined_steps = cfg.refine_steps if result.refined else 0
    saved_arch, saved_args = model_arch(result.model, arch, args)
    warnings = sanitize_warnings(result.verdict, cfg)
    summary = {"t": result.t, "ensemble": result.ensemble_ts, "clean_accuracy": final["clean_accuracy"],
               "attack_success_rate": final.get("attack_success_rate"),
               "robust_accuracy": final.get("robust_accuracy"),
               "endpoints": [{k: e.get(k) for k in ("clean_accuracy", "attack_success_rate", "robust_accuracy",
                                                      "made_by") if k in e} for e in endpoints],
               "curve": cfg.curve, "rule": rule_text(cfg, two_suspects=len(model_dirs) == 2),
               "verdict": result.verdict, "warnings": warnings,
               "refined_steps": refined_steps, "refine_check": result.refine_check,
               "reused_second_endpoint": config["reused_second_endpoint"], "unit_groups": result.unit_groups,
               "seconds": {k: round(v, 1) for k, v in result.seconds.items()}, "path": result.path,
               "stages": result.stages}
    inherited = inherited_fields(metas[0])
    sanitized = {"method": "mode-connectivity", "from": [str(p) for p in model_dirs], "t": result.t,
                 "ensemble": result.ensemble_ts, "curve": cfg.curve, "clean_budget": budget_size,
                 "second_endpoint": result.second_endpoint, "refined_steps": refined_steps,
                 "refine_check": result.refine_check}
    meta = build_sidecar(saved_arch, saved_args, dataset.name, **inherited, seed=cfg.seed,
                         provenance={**provenance_of(metas[0]), "sanitized": sanitized}, metrics=final)
    save_checkpoint(result.model, out_dir, meta)
    if result.second_model is not None and cfg.second_endpoint == "scratch":  # reusable on the same budget
        save_checkpoint(result.second_model, out_dir / SECOND_ENDPOINT_DIR,
                        build_sidecar(arch, args, dataset.name, **inherited, seed=cfg.seed,
                                      provenance={"second_endpoint": record},
                                      metrics={k: v for k, v in endpoints[-1].items() if k != "made_by"},
                                      order=SECOND_ENDPOINT_ORDER))
    control = {k: v.detach().contiguous() for k, v in zip(result.curve.names, result.curve.control)}
    with atomic_path(out_dir / "curve.safetensors") as tmp:
        safetensors.torch.save_file(control, str(tmp), metadata={"curve": cfg.curve})
    atomic_write_json(out_dir / "path.json", summary)
    atomic_write_json(out_dir / "config.json", config)
    exported = final if result.refined or result.ensemble_ts else None
    title = f"{cfg.curve} curve, {dataset.name}, {arch}, clean budget {budget_size}"
    if result.stages:
        plot_stages(result.stages, out_dir / "path.png", exported=exported, title=title)
    else:
        plot_path(result.path, result.t, out_dir / "path.png", ensemble=result.ensemble_ts, exported=exported,
                  title=title, one_suspect=result.second_endpoint is not None)
    return summary


def rule_text(cfg: SanitizerConfig, two_suspects: bool) -> str:
    """The sanitizer's rule for t, in words, as its configuration sets it."""
    text = (f"farthest t from the suspect endpoint(s) among those at least {cfg.min_distance:.2f} from every suspect "
            f"end, with validation accuracy within {cfg.ca_tolerance:.3f} of the best of them (a warning when that "
            "best is more than the tolerance under the best on the path)")
    if cfg.verify:
        text += ("; then one grid step further from the suspect(s) while Neural Cleanse still finds the suspect's "
                 f"target on the chosen model (anomaly index above {cfg.verify_threshold:g} among the suspect's labels)")
    if cfg.ensemble and (two_suspects or (cfg.second_endpoint == "permuted" and cfg.stages == 1)):
        text += "; with two such t, the mean of both models' softmax outputs"
    if cfg.second_endpoint == "permuted" and cfg.stages == 2 and not two_suspects:
        text += "; applied to the suspect-to-permuted-copy curve, then to the aligned-suspect-to-that-point curve"
    return text


def sanitize_warnings(verdict: dict, cfg: SanitizerConfig) -> list[str]:
    """One line per way the exported model falls short of what the sanitizer promises: outside the accuracy
    tolerance (to keep its distance from the suspects, or to leave the backdoor behind), or still carrying the
    backdoor by Neural Cleanse's check. Empty when it does not."""
    warnings = []
    if verdict.get("backdoor_check") is False:
        last = verdict["check"]["checks"][-1]
        found = ", ".join(f"label {k}: anomaly index {v:.2f}" for k, v in last["anomaly_index"].items())
        warnings.append(f"the backdoor may remain: Neural Cleanse still finds the suspect's target on every point "
                        f"checked, up to {last['model']} ({found}; threshold {cfg.verify_threshold:g})")
    if not verdict.get("within_tolerance", True):
        warnings.append(f"the exported model costs more than the accuracy tolerance ({cfg.ca_tolerance:.1%} under the "
                        f"best validation accuracy on the path): {verdict.get('note', '')}")
    return warnings


def finetune_run(dataset, model_dir: str, budget_size: int, cfg: TrainConfig, backdoor=None, budget_seed: int = 0,
                 progress: bool = True) -> dict:
    """Fine-tuning baseline on the same clean budget (for comparison tables)."""
    model, meta = load_for(model_dir, dataset)
    holdout = holdout_size(meta, dataset.name)
    budget = clean_budget(dataset, budget_size, seed=budget_seed, holdout=holdout)
    tuned = finetune(model, budget.x, budget.y, cfg, progress=progress)
    return evaluate(tuned, dataset.test_x, dataset.test_y, backdoor or backdoor_of(meta), dataset.num_classes)


def model_attack_run(dataset, name: str, model_dir: str, out: str, *, backdoor=None, awp=None, fault=None,
                     target: int | None = None, n_images: int = 5, attacker_images: int | None = None, seed: int = 0,
                     progress: bool = True) -> dict:
    """Attack a trained checkpoint by changing its weights (``weight-perturbation``, ``fault-injection`` or
    ``single-bias``); write the attacked checkpoint and ``config.json`` to ``out``; return a summary with the
    metrics before and after, the agreement with the original model and the relative weight change."""
    from .attacks import MODEL_ATTACKS, ModelAttackData, agreement

    if name not in MODEL_ATTACKS:
        raise BackdoorlabError(f"unknown model attack {name!r}; valid: {', '.join(MODEL_ATTACKS)}")
    check_out_dir(out, "attack", [model_dir])
    model, meta = load_for(model_dir, dataset)
    holdout = holdout_size(meta, dataset.name)
    x_train, y_train = training_part(dataset, holdout)
    if attacker_images is None:
        attacker_images = min(1000, len(y_train))
    if not 1 <= attacker_images <= len(y_train):
        raise BackdoorlabError(f"the attacker's images must number 1..{len(y_train)}, got {attacker_images}")
    pick = torch.randperm(len(y_train), generator=torch.Generator().manual_seed(seed))[:attacker_images]
    xa, ya = x_train[pick], y_train[pick]
    test_x, test_y, k = dataset.test_x, dataset.test_y, dataset.num_classes
    tick = time.time()
    entry = MODEL_ATTACKS.entry(name)
    settings = {"awp": awp, "fault": fault}[entry.traits["settings"]]
    data = ModelAttackData(xa, ya, test_x, test_y, k, backdoor=backdoor, target=target, n_images=n_images, seed=seed,
                           progress=progress)
    attacked, report, backdoor = entry.run(model, settings, data)
    seconds = time.time() - tick
    before = evaluate(model, test_x, test_y, backdoor, k)
    after = evaluate(attacked, test_x, test_y, backdoor, k)
    after["agreement"] = agreement(model, attacked, test_x)
    attack_spec = {"name": name, **backdoor.to_dict()}
    new_meta = derived_sidecar(meta, seed=seed, metrics=after,
                               provenance={"attack": attack_spec, "attacked_from": str(model_dir),
                                           "original_provenance": meta.get("provenance"),
                                           "report": {k2: v for k2, v in report.items() if k2 != "config"}})
    save_checkpoint(attacked, out, new_meta)
    config = {"command": "attack", "attack": name, "model": str(model_dir), "dataset": dataset.name,
              "settings": report.get("config", {"layer": report.get("layer")}),
              "attacker_images": attacker_images, "seed": seed, "backdoor": backdoor.to_dict(),
              "backdoorlab_version": __version__}
    atomic_write_json(pathlib.Path(out) / "config.json", config)
    return {"attack": name, "before": before, "after": after, "seconds": round(seconds, 1),
            "relative_weight_change": report["relative_weight_change"],
            **{k2: report[k2] for k2 in ("success", "steps", "layer", "unit", "change") if k2 in report}}


def default_repair_options(name: str, dataset_name: str) -> dict:
    """Data-set dependent defaults of a repairer: the augmentation of its training steps. The repairers that
    learn new features from the budget (the sanitizer's curve and second endpoint, FST's shifted features) use the
    sanitizer's small-budget augmentation; those that only adjust the suspect use its training augmentation."""
    from .augment import sanitizer_augmentation
    from .defenses.repair import REPAIRERS
    entry = REPAIRERS.entry(name)
    if "augment" not in entry.config.option_names():
        return {}
    if entry.traits["learns_features"]:
        return {"augment": sanitizer_augmentation(dataset_name)}
    return {"augment": TRAIN_DEFAULTS.get((dataset_name, "*"), {}).get("augment", "none")}


def repair_run(dataset, name: str, model_dirs: list[str], budget_size: int, out: str | None = None,
               options: dict | None = None, backdoor=None, budget_seed: int = 0, progress: bool = True) -> dict:
    """Repair suspect checkpoint(s) with defense ``name`` on a clean budget; evaluate before and after.

    Writes the repaired checkpoint, ``report.json`` and ``config.json`` to ``out`` (if given) and returns the
    report: ``before`` (one entry per suspect), ``after``, ``info`` (what the defense chose) and ``seconds``."""
    from .defenses.repair import repair, repairer_config
    if not 1 <= len(model_dirs) <= 2:
        raise BackdoorlabError(f"a defense takes one or two models, got {len(model_dirs)}")
    options = {**default_repair_options(name, dataset.name), **(options or {})}
    cfg = repairer_config(name, **options)  # validate before any work
    check_out_dir(out, "repair", model_dirs)
    loaded = [load_for(p, dataset) for p in model_dirs]
    metas = [m for _, m in loaded]
    if getattr(cfg, "bn_augment", None) == "auto":  # the suspect's training augmentation (resolve_bn_augment)
        options["bn_augment"] = resolve_bn_augment(cfg, metas[0]).bn_augment
    if len(loaded) == 2 and (metas[0]["arch"], metas[0]["arch_args"]) != (metas[1]["arch"], metas[1]["arch_args"]):
        raise BackdoorlabError(f"the two models have different architectures ({metas[0]['arch']} vs "
                               f"{metas[1]['arch']})")
    holdout = holdout_size(metas[0], dataset.name)
    budget = clean_budget(dataset, budget_size, seed=budget_seed, holdout=holdout)
    if backdoor is None:
        backdoor = backdoor_of(metas[0])
    arch, args = metas[0]["arch"], metas[0]["arch_args"]
    test = (dataset.test_x, dataset.test_y)
    before = [evaluate(m, *test, backdoor, dataset.num_classes) for m, _ in loaded]
    tick = time.time()
    model, info = repair(name, loaded[0][0], budget, loaded[1][0] if len(loaded) == 2 else None, progress=progress,
                         model_factory=lambda: create_model(arch, **args), **options)
    seconds = time.time() - tick
    after = evaluate(model, *test, backdoor, dataset.num_classes)
    report = {"defense": name, "before": before, "after": after, "seconds": round(seconds, 1), "info": info,
              "clean_budget": budget_size}
    if out is not None:
        out_dir = pathlib.Path(out)
        out_dir.mkdir(parents=True, exist_ok=True)
        saved_arch, saved_args = model_arch(model, arch, args)
        repaired = {"defense": name, "from": [str(p) for p in model_dirs], "clean_budget": budget_size,
                    "info": {k: v for k, v in info.items() if k not in ("path", "config")}}
        meta = build_sidecar(saved_arch, saved_args, dataset.name, **inherited_fields(metas[0]), seed=cfg.seed,
                             provenance={**provenance_of(metas[0]), "repaired": repaired}, metrics=after)
        save_checkpoint(model, out_dir, meta)
        atomic_write_json(out_dir / "report.json", report)
        atomic_write_json(out_dir / "config.json", {
            "command": "repair", "defense": name, "models": [str(p) for p in model_dirs], "dataset": dataset.name,
            "clean_budget": budget_size, "budget_seed": budget_seed, "holdout": holdout, "options": cfg.to_dict(),
            "evaluated_backdoor": backdoor.to_dict() if backdoor else None, "backdoorlab_version": __version__})
    return report
