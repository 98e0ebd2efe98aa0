"""What the benchmark scripts share: the machine line and a results.json that is saved after every step."""

from __future__ import annotations

import fcntl
import json
import os
import pathlib
import platform

import torch

from backdoorlab.io import atomic_write_json
from backdoorlab.machine import cpu_model


def machine() -> str:
    """Where a number was measured. The CPU model and the kernel set matter: float results (and so seeded
    training runs) are bit-identical only on the same kind of CPU."""
    return (f"{platform.machine()}, {cpu_model()} ({torch.backends.cpu.get_cpu_capability()}), {os.cpu_count()} CPU "
            f"cores, torch {torch.__version__}, {torch.get_num_threads()} threads")


def merge_results(on_disk: dict, ours: dict, base: dict | None = None) -> dict:
    """``ours`` laid over ``on_disk``: top-level values of ours win, and where both hold a dict (``endpoints``,
    ``defenses``, ``models``, ...) the two are merged key by key, so entries only another process wrote are kept.

    ``base``: what ours held when it last read the file. Then only what ours changed since (or holds alone) wins;
    an entry ours holds unchanged takes the file's version, which another process may have written since, so a
    stale copy never overwrites it. The file's version is copied into our entry's dict, which a caller may hold.
    """
    merged = dict(on_disk)
    for key, value in ours.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            theirs = merged[key]
            old = base.get(key) if base is not None and isinstance(base.get(key), dict) else None
            inner = dict(theirs)
            for sub, ours_sub in value.items():
                if old is None or sub not in theirs or sub not in old or not _same(ours_sub, old[sub]):
                    inner[sub] = ours_sub
                elif isinstance(ours_sub, dict) and isinstance(theirs[sub], dict):
                    ours_sub.clear()
                    ours_sub.update(theirs[sub])
                    inner[sub] = ours_sub
            value.clear()
            value.update(inner)
            merged[key] = value
        elif base is None or key not in merged or key not in base or not _same(value, base[key]):
            merged[key] = value
    return merged


def _same(a, b) -> bool:
    """Whether two JSON-able values would be written alike."""
    return json.dumps(a, sort_keys=True, default=str) == json.dumps(b, sort_keys=True, default=str)


def open_results(out: str) -> tuple[pathlib.Path, dict, callable]:
    """Create ``out``; return it, the results already in ``out/results.json`` (a rerun resumes) and a function
    that saves them atomically. Two processes may share ``out`` (``--endpoint-seeds 1`` and ``2`` side by side):
    a save takes a lock, re-reads the file and merges what this process changed since its last save over it
    (:func:`merge_results`), so neither loses the other's rows, and a stale copy of a row the other process has
    rewritten does not overwrite it."""
    out_dir = pathlib.Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    path = out_dir / "results.json"
    results = json.loads(path.read_text()) if path.exists() else {}
    synced = [json.loads(json.dumps(results))]  # what the file held, as far as this process knows

    def save():
        with open(out_dir / ".results.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            if path.exists():
                merged = merge_results(json.loads(path.read_text()), results, synced[0])
                results.clear()
                results.update(merged)
            atomic_write_json(path, results)
            synced[0] = json.loads(json.dumps(results, default=str))

    return out_dir, results, save


def load_saved_curve(run, bn_augment: str = "auto", progress: bool = False):
    """Rebuild a saved sanitizer run (a ``sanitize`` output directory with config.json and curve.safetensors) of
    two models, or of one with the permuted second endpoint (which is made again: it depends only on the suspect
    and the fit images): its data set, endpoints, sanitizer, budget and trained curve (the first stage's, for a
    two-stage run). The curve's training does not depend on batch-norm re-estimation or on the refine step, so
    this is the curve a rerun with the same seeds trains. Returns a namespace with ``config, dataset, loaded,
    sanitizer, budget, fit_part, val_part, curve, ends`` (the suspect ends of the path) and ``dev``: the indices
    of the development images (the held-out pool outside the budget: never the budget, never the test set)."""
    import dataclasses
    import json
    import sys
    import types

    import safetensors.torch

    from backdoorlab.budget import clean_budget, holdout_split
    from backdoorlab.curves import Curve
    from backdoorlab.data import load_dataset
    from backdoorlab.defenses import ModeConnectivitySanitizer, SanitizerConfig
    from backdoorlab.models import create_model
    from backdoorlab.models import load_for
    from backdoorlab.runs import resolve_bn_augment

    run = pathlib.Path(run)
    config = json.loads((run / "config.json").read_text())
    ds = load_dataset(config["dataset"])
    loaded = [load_for(p, ds) for p in config["models"]]
    one = len(loaded) == 1
    if one and (config["sanitizer"].get("second_endpoint") != "permuted" or config["sanitizer"].get("stages") != 1):
        sys.exit("a one-model run can be rebuilt with the permuted second endpoint and one stage only (a scratch "
                 "endpoint is saved in its second-endpoint/ folder: sanitize again with --reuse-second-endpoint)")
    known = {f.name for f in dataclasses.fields(SanitizerConfig)}  # runs of earlier code may carry retired fields
    saved_cfg = {k: v for k, v in config["sanitizer"].items() if k in known}
    cfg = resolve_bn_augment(SanitizerConfig(**{**saved_cfg, "bn_augment": bn_augment}), loaded[0][1])
    budget = clean_budget(ds, config["clean_budget"], seed=config["budget_seed"], holdout=config["holdout"])
    arch, a = loaded[0][1]["arch"], loaded[0][1]["arch_args"]
    sanitizer = ModeConnectivitySanitizer(cfg, lambda: create_model(arch, **a), progress=progress)
    fit_part, val_part = sanitizer.split_budget(budget)
    end = sanitizer.make_permuted_endpoint(loaded[0][0], fit_part)[0] if one else loaded[1][0]
    curve = Curve(loaded[0][0], end, kind=cfg.curve, init="midpoint")
    control = safetensors.torch.load_file(str(run / "curve.safetensors"))
    for name, p in zip(curve.names, curve.control):
        p.data.copy_(control[name])
    _, pool = holdout_split(len(ds.train_y), config["holdout"])
    dev = pool[~torch.isin(pool, budget.indices)]
    return types.SimpleNamespace(config=config, dataset=ds, loaded=loaded, sanitizer=sanitizer, budget=budget,
                                 fit_part=fit_part, val_part=val_part, curve=curve, ends=(0.0, 1.0), dev=dev)


def load_patch_suspect(model_dir: str, dataset_name: str):
    """``(dataset, model, meta, backdoor)`` for a suspect whose sidecar records a patch-trigger backdoor (one with
    ``mask_and_pattern``), the oracle the exploration scripts compare against; a BackdoorlabError otherwise."""
    from backdoorlab.data import load_dataset
    from backdoorlab.errors import BackdoorlabError
    from backdoorlab.attacks import backdoor_of
    from backdoorlab.models import load_for
    dataset = load_dataset(dataset_name)
    model, meta = load_for(model_dir, dataset)
    backdoor = backdoor_of(meta)
    if backdoor is None or not hasattr(backdoor.trigger, "mask_and_pattern"):
        raise BackdoorlabError(f"{model_dir} records no patch-trigger backdoor to use as the oracle")
    return dataset, model, meta, backdoor


def cached_detector_features(path) -> dict:
    """The penultimate features detector_stability.py caches per model (FEATURES/NAME.npz): ``train`` (float64),
    ``y``, ``poisoned``, ``clean``, ``clean_y``, and ``truth``, a boolean mask of the poisoned training samples."""
    import numpy as np

    z = np.load(path)
    out = {k: z[k] for k in ("y", "poisoned", "clean", "clean_y")}
    out["train"] = z["train"].astype(np.float64)
    out["truth"] = np.zeros(len(out["y"]), dtype=bool)
    out["truth"][out["poisoned"]] = True
    return out
