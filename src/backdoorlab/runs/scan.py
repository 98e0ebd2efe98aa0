"""``backdoorlab scan``: is one suspect model backdoored, and which label is the target?

:func:`scan_run` loads a checkpoint, draws the clean budget from its held-out pool (as ``sanitize`` does), runs
the model-level detector, Neural Cleanse, and calibrates STRIP's input-level threshold on the same clean images
(the threshold a deployment would use to screen inputs). It never reads the planted attack recorded in the
checkpoint. With ``report_dir`` it writes ``report.json``, ``config.json``, the reversed triggers as PNGs
(``triggers/``), ``norms.png`` (mask norms and anomaly indices per label) and ``index.html`` showing all of them
(:mod:`.scan_report`); every file is written atomically.
"""

from __future__ import annotations

import pathlib
import time

from .. import __version__
from ..checkpoint_data import checkpoint_clean_budget
from ..device import computes_on_device
from ..defenses.neural_cleanse import NeuralCleanseConfig, neural_cleanse
from ..detectors.strip import StripConfig, StripDetector
from ..errors import BackdoorlabError
from ..io import atomic_write_json
from ..models import load_for
from ..models.sidecar import holdout_size
from .scan_report import write_report


def _nc_config(options: dict, seed: int) -> NeuralCleanseConfig:
    NeuralCleanseConfig.check_keys(options, owner="scan", noun="Neural Cleanse option")
    options = {k: v for k, v in options.items() if v is not None}
    options.setdefault("seed", seed)
    return NeuralCleanseConfig(**options)


@computes_on_device
def scan_run(dataset, model_dir: str, budget_size: int = 1000, report_dir: str | None = None, budget_seed: int = 0,
             progress: bool = True, strip: bool = True, strip_images: int = 500, strip_overlays: int = 100,
             device=None, arch: str | None = None, **nc_options) -> dict:
    """Scan the checkpoint in ``model_dir`` for a backdoor with a clean budget of ``budget_size`` images.

    ``nc_options`` are :class:`NeuralCleanseConfig` fields (``epochs``, ``batch_size``, ``batches_per_epoch``,
    ``lr``, ``init_cost``, ``anomaly_threshold``, ...). With ``strip`` the STRIP threshold (1% false rejections)
    is fitted on ``strip_images`` budget images with ``strip_overlays`` overlays each, overlays drawn from the
    whole budget. Returns a JSON-able dict: ``backdoored``, ``suspected_target`` (label or None),
    ``suspected_target_name``, ``anomaly_index``, ``threshold``, ``flagged_labels``, ``l1_norms`` and
    ``anomaly_indices`` (per label), ``attack_success`` (of each reversed trigger on the budget), ``strip``,
    ``seconds``, ``config`` and ``report`` (the report directory or None). ``device``: where the model runs
    (None: auto)."""
    tick = time.time()
    cfg = _nc_config(nc_options, budget_seed)
    if strip and (strip_images < 2 or strip_overlays < 1):
        raise BackdoorlabError(f"STRIP needs at least 2 calibration images and 1 overlay, got {strip_images} "
                               f"and {strip_overlays}")
    model, meta = load_for(model_dir, dataset, arch)
    model.to(device)
    holdout = holdout_size(meta, dataset.name)
    budget = checkpoint_clean_budget(dataset, meta, budget_size, budget_seed)
    if budget_size < cfg.batch_size:
        raise BackdoorlabError(f"clean budget of {budget_size} images is smaller than Neural Cleanse's batch of "
                               f"{cfg.batch_size}; use a larger budget or a smaller batch size")
    num_classes = dataset.num_classes
    nc = neural_cleanse(model, budget.x, num_classes, cfg, progress=progress)
    strip_summary, strip_cfg = None, None
    if strip:
        strip_cfg = StripConfig(n_overlays=strip_overlays, seed=budget_seed)
        det = StripDetector(model, budget.x, strip_cfg, progress=progress)
        det.fit(budget.x[:strip_images])
        strip_summary = det.summary()
    names = list(meta.get("class_names") or dataset.class_names)
    nd = nc.to_dict()
    config = {"command": "scan", "model": str(model_dir), "dataset": dataset.name, "arch": meta.get("arch"),
              "clean_budget": budget_size, "budget_seed": budget_seed, "holdout": holdout,
              "neural_cleanse": cfg.to_dict(), "strip": strip_cfg.to_dict() | {"images": min(strip_images, budget_size)}
              if strip_cfg else None, "backdoorlab_version": __version__}
    seconds = {"neural_cleanse": round(nc.seconds, 1), "strip": round(strip_summary["seconds"], 1) if strip else None}
    seconds["total"] = round(time.time() - tick, 1)
    result = {
        "backdoored": nc.backdoored, "suspected_target": nc.suspected_target,
        "suspected_target_name": names[nc.suspected_target] if nc.suspected_target is not None else None,
        "anomaly_index": nd["anomaly_index"], "threshold": nc.threshold, "flagged_labels": nc.flagged_labels,
        "detector": "neural-cleanse", "labels": nc.labels, "l1_norms": nd["l1_norms"],
        "anomaly_indices": nd["anomaly_indices"], "attack_success": nd["attack_success"],
        "converged": nd["converged"], "strip": strip_summary, "seconds": seconds, "config": config,
        "report": str(report_dir) if report_dir is not None else None,
    }
    if report_dir is not None:
        write_report(report_dir, result, nc, budget.x, names)
        result["seconds"]["total"] = round(time.time() - tick, 1)
        atomic_write_json(pathlib.Path(report_dir) / "report.json", result)
    return result


