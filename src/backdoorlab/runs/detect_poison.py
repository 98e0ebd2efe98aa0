"""``backdoorlab detect-poison``: which training images of a model's training set are poisoned?

:func:`detect_poison_run` loads a checkpoint, takes its training set and the clean budget, computes the model's
penultimate features of both and runs one training-set detector (activation clustering or spectral
signatures, :mod:`backdoorlab.detectors`). The training set is the one the checkpoint was trained on, rebuilt
from its sidecar when it records a data-poisoning attack (so the poisoned indices are known and precision and
recall are reported), else the training images of the data set given (a user's own folder or npz file, the
data the model is suspected to have learnt a backdoor from). The clean budget is drawn from the checkpoint's
held-out pool, as every other command draws it; ``budget_size=0`` runs the detector without clean images (the
papers' rules). The detector never reads the planted trigger or the poisoned indices.

With ``out`` it writes ``detection.json`` (the result with the flagged indices), ``config.json``, ``scores.png``
(per label, the detector's scores with its threshold) and ``flagged.png`` (a grid of flagged training images),
each atomically.
"""

from __future__ import annotations

import pathlib
import time

import numpy as np

from .. import __version__
from ..budget import training_part
from ..checkpoint_data import checkpoint_clean_budget
from ..detectors import DETECTORS
from ..detectors.poison_detection import (detection_metrics, penultimate_features, poisoned_training_set,
                                          records_poisoning)
from ..device import computes_on_device
from ..errors import BackdoorlabError, valid_names
from ..io import atomic_write_json
from ..models import load_for
from ..models.sidecar import holdout_size

TRAINING_SET_DETECTORS = "training-set"


def training_set_detector(name: str):
    """The registry entry of training-set detector ``name``; another name is a one-line error listing them."""
    valid = DETECTORS.names(level=TRAINING_SET_DETECTORS)
    if name not in valid:
        raise BackdoorlabError(f"unknown training-set detector {name!r}; valid: {valid_names(valid)}")
    return DETECTORS.entry(name)


def suspect_training_set(dataset, meta: dict, poison_record: dict | None = None):
    """(x, y, poisoned indices or None, where the set came from): the checkpoint's own poisoned training set when
    its sidecar records the poisoning, else the data set's training part (its held-out pool excluded), with the
    poisoned indices that ``poison_record`` (a ``poison-folder`` record of this folder) names."""
    if records_poisoning(meta) and meta.get("dataset") == dataset.name:
        data = poisoned_training_set(dataset, meta)
        return data.x, data.y, np.asarray(data.poisoned, dtype=np.int64), "rebuilt from the checkpoint's sidecar"
    holdout = holdout_size(meta, dataset.name)
    x, y = training_part(dataset, holdout)
    poisoned = recorded_poisoned(dataset, holdout, poison_record) if poison_record is not None else None
    return x, y, poisoned, f"the training images of {dataset.name}"


def recorded_poisoned(dataset, holdout: int, record: dict) -> np.ndarray:
    """Indices into the training part of ``dataset`` (a folder) of the files a poison-folder ``record`` says it
    poisoned; a one-line error when the record is of another folder."""
    from ..budget import holdout_split
    from ..data.image_files import list_split

    source = dataset.source or {}
    if source.get("kind") != "folder" or source.get("path") != record.get("out"):
        raise BackdoorlabError(f"the poisoning record is of {record.get('out')}, not of the data set {dataset.name}")
    root = pathlib.Path(source["path"])
    paths, _ = list_split(root / "train", list(dataset.class_names))
    position = {p.relative_to(root).as_posix(): k for k, p in enumerate(paths)}
    train_idx, _ = holdout_split(len(paths), holdout)
    where = {int(k): j for j, k in enumerate(train_idx.tolist())}
    try:
        files = [position[pathlib.PurePath(p["file"]).as_posix()] for p in record["poisoned"]]
    except (KeyError, TypeError) as e:
        raise BackdoorlabError(f"the poisoning record names a file {e} that {root} does not hold") from None
    return np.asarray(sorted(where[k] for k in files if k in where), dtype=np.int64)


@computes_on_device
def detect_poison_run(dataset, model_dir: str, detector: str = "activation-clustering", budget_size: int = 1000,
                      budget_seed: int = 0, out: str | None = None, progress: bool = True, device=None,
                      arch: str | None = None, poison_record: dict | None = None, **options) -> dict:
    """Run training-set ``detector`` on the training set of the checkpoint in ``model_dir`` (see the module
    docstring). ``poison_record``: a ``poison-folder`` record of the data set's folder, whose poisoned files
    give precision and recall (the detector never reads it). ``options``: fields of the detector's config
    (``reduction``, ``analysis``, ``rule``, ...).
    Returns a JSON-able dict: ``detector``, ``flagged`` (count), ``flagged_per_label``, ``training_images``,
    ``training_set`` (where it came from), ``warnings``, ``precision`` / ``recall`` / ``auc`` / ``poisoned``
    (only when the poisoned indices are known), ``per_label``, ``config``, ``seconds`` and ``out``."""
    tick = time.time()
    entry = training_set_detector(detector)
    cfg = entry.config.from_dict(options, owner=detector)
    if budget_size < 0:
        raise BackdoorlabError(f"--clean-budget must be >= 0 (0: no clean images), got {budget_size}")
    model, meta = load_for(model_dir, dataset, arch)
    model.to(device)
    x, y, poisoned, source = suspect_training_set(dataset, meta, poison_record)
    budget = checkpoint_clean_budget(dataset, meta, budget_size, budget_seed) if budget_size else None
    features = penultimate_features(model, x, progress=progress)
    clean = (penultimate_features(model, budget.x), budget.y) if budget is not None else (None, None)
    feature_seconds = time.time() - tick
    det = entry.run(features, y, *clean, **cfg.to_dict(), progress=progress)
    names = list(meta.get("class_names") or dataset.class_names)
    labels = np.asarray(y)[det.flagged]
    result = {"detector": detector, "flagged": int(len(det.flagged)),
              "flagged_per_label": {names[int(k)]: int(v) for k, v in zip(*np.unique(labels, return_counts=True))},
              "training_images": int(len(y)), "training_set": source, "warnings": list(det.warnings)}
    if poisoned is not None:
        m = detection_metrics(det, poisoned, n=len(y))
        result.update(precision=_num(m["precision"]), recall=_num(m["recall"]), auc=_num(m["auc"]),
                      poisoned=m["poisoned"], true_positives=m["true_positives"])
    result.update(per_label=det.per_label, config={
        "command": "detect-poison", "model": str(model_dir), "dataset": dataset.name, "detector": detector,
        "options": det.config, "clean_budget": budget_size, "budget_seed": budget_seed,
        "holdout": holdout_size(meta, dataset.name), "backdoorlab_version": __version__},
        seconds={"features": round(feature_seconds, 1), "detector": round(det.seconds, 1),
                 "total": round(time.time() - tick, 1)},
        out=str(out) if out is not None else None)
    if out is not None:
        from .poison_report import write_detection

        write_detection(pathlib.Path(out), result, det, x, np.asarray(y), poisoned, names)
        result["seconds"]["total"] = round(time.time() - tick, 1)
        atomic_write_json(pathlib.Path(out) / "detection.json", {**result, "flagged_indices": det.flagged.tolist()})
    return result


def _num(v):
    """A float for JSON: None where it is undefined (nan)."""
    return None if v is None or v != v else round(float(v), 6)
