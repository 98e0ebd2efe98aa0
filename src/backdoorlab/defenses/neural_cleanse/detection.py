"""Neural Cleanse's detection: reverse a trigger for every label, then flag a label whose mask norm is an
outlier below the others (the anomaly index, see the package docstring).
:mod:`backdoorlab.detectors.neural_cleanse` registers :func:`neural_cleanse` as the detector ``neural-cleanse``."""

from __future__ import annotations

import math
import pathlib
import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ...errors import BackdoorlabError
from ...png import save_png
from ...tensors import to_float
from .config import NeuralCleanseConfig
from .reverse import reverse_trigger
from .trigger import ReversedTrigger

MAD_CONSISTENCY = 1.4826  # makes the MAD a consistent estimator of the standard deviation for normal data


def anomaly_indices(norms) -> np.ndarray:
    """``|L1_c - median| / (1.4826 * MAD)`` for every label (the paper's anomaly index; a MAD of 0 gives inf
    for labels off the median, 0 on it)."""
    norms = np.asarray(norms, dtype=np.float64)
    med = np.median(norms)
    dev = np.abs(norms - med)
    mad = MAD_CONSISTENCY * np.median(dev)
    if mad == 0:
        return np.where(dev > 0, np.inf, 0.0)
    return dev / mad


@dataclass
class NeuralCleanseResult:
    """What :func:`neural_cleanse` found. ``triggers[i]`` is the trigger of ``labels[i]``."""

    labels: list[int]
    triggers: list[ReversedTrigger]
    l1_norms: list[float]
    anomaly_indices: list[float]  # per label; labels above the median get 0 (only small triggers are suspicious)
    anomaly_index: float  # of the label with the smallest mask
    backdoored: bool
    suspected_target: int | None
    flagged_labels: list[int]  # every label below the median with an index above the threshold
    threshold: float
    seconds: float
    config: dict = field(default_factory=dict)

    def trigger_for(self, label: int) -> ReversedTrigger:
        for t in self.triggers:
            if t.label == label:
                return t
        raise BackdoorlabError(f"no reversed trigger for label {label}; have {self.labels}")

    def labels_to_unlearn(self) -> list[int]:
        """The flagged labels, or the label with the smallest mask when none is flagged (a defender who repairs
        anyway)."""
        return self.flagged_labels or [self.labels[int(np.argmin(self.l1_norms))]]

    def to_dict(self) -> dict:
        """JSON-able summary (no tensors)."""
        return {"backdoored": self.backdoored, "suspected_target": self.suspected_target,
                "anomaly_index": _finite(self.anomaly_index), "threshold": self.threshold,
                "flagged_labels": self.flagged_labels, "labels": self.labels,
                "l1_norms": [round(v, 4) for v in self.l1_norms],
                "anomaly_indices": [_finite(v) for v in self.anomaly_indices],
                "attack_success": [round(t.attack_success, 4) for t in self.triggers],
                "converged": [t.converged for t in self.triggers], "epochs_run": [t.epochs for t in self.triggers],
                "seconds": round(self.seconds, 2), "config": self.config}

    def save_images(self, out_dir, examples: torch.Tensor | None = None, scale: int = 4) -> dict[str, str]:
        """Write PNGs to ``out_dir``: per label the mask, the pattern, ``mask * pattern`` and (with float or
        uint8 ``examples`` (N, C, H, W)) up to 8 stamped examples in a row; return {name: file name}."""
        out = pathlib.Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        files = {}
        ex = to_float(examples[:8]) if examples is not None and len(examples) else None
        for t in self.triggers:
            images = {"mask": t.mask, "pattern": t.pattern, "trigger": t.mask * t.pattern}
            if ex is not None:
                images["examples"] = torch.cat(list(t.apply(ex)), dim=-1)
            for kind, img in images.items():
                name = f"label{t.label}_{kind}.png"
                save_png(img, out / name, scale)
                files[f"{kind}_{t.label}"] = name
        return files


def _finite(v: float, cap: float = 1e6) -> float:
    return round(float(min(v, cap)), 4) if math.isfinite(v) or v > 0 else 0.0


def neural_cleanse(model: nn.Module, x: torch.Tensor, num_classes: int, cfg: NeuralCleanseConfig | None = None,
                   *, progress: bool = True) -> NeuralCleanseResult:
    """Run Neural Cleanse on ``model`` with clean images ``x`` (uint8 or float (N, C, H, W)).

    Returns the reversed trigger of every label, the mask L1 norms, the anomaly indices and the verdict."""
    cfg = cfg or NeuralCleanseConfig()
    if x.dim() != 4 or len(x) < 2:
        raise BackdoorlabError(f"Neural Cleanse needs clean images (N, C, H, W) with N >= 2, got {tuple(x.shape)}")
    labels = list(range(num_classes)) if cfg.labels is None else [int(v) for v in cfg.labels]
    bad = [v for v in labels if not 0 <= v < num_classes]
    if bad or len(labels) < 3:
        raise BackdoorlabError(f"Neural Cleanse needs at least 3 labels in 0..{num_classes - 1}, got {labels}")
    was_training = model.training
    model.eval()
    tick = time.time()
    bar = tqdm(total=len(labels) * cfg.epochs, desc="neural cleanse", unit="epoch", disable=not progress,
               leave=False, dynamic_ncols=True)
    try:
        triggers = [reverse_trigger(model, x, lab, cfg, progress_bar=bar) for lab in labels]
    finally:
        bar.close()
        model.train(was_training)
    norms = [t.l1 for t in triggers]
    idx = anomaly_indices(norms)
    med = float(np.median(norms))
    idx = [float(v) if n < med else 0.0 for v, n in zip(idx, norms)]
    k = int(np.argmin(norms))
    flagged = [lab for lab, v in zip(labels, idx) if v > cfg.anomaly_threshold]
    backdoored = idx[k] > cfg.anomaly_threshold
    return NeuralCleanseResult(labels, triggers, norms, idx, idx[k], backdoored, labels[k] if backdoored else None,
                               flagged, cfg.anomaly_threshold, time.time() - tick, cfg.to_dict())
