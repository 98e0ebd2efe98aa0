"""Does a repaired model still carry the suspect's backdoor? A trigger-free check with Neural Cleanse.

The sanitizer never sees the trigger, but it holds the suspect. Neural Cleanse, run once on the suspect with the
clean budget, finds for every label the smallest mask that sends clean images there; a backdoor's target needs
a much smaller mask than the other labels, and that is its anomaly index. A model that still carries the
backdoor still needs only a small mask for that label. So to check a candidate, the mask is reverse-engineered
for the suspect's flagged label(s) alone, on the candidate, and its norm is placed in the suspect's own
distribution of mask norms (the median and spread of its other labels): above ``threshold`` (the paper's 2) it
is still anomalous, and the candidate still carries the backdoor.

Why not simply stamp the suspect's reversed trigger on the candidate: that trigger is a mix of the backdoor and
an adversarial patch of the suspect, and the patch transfers to any model near the suspect, so it still reads high where the backdoor is gone
(docs/sanitizer.md, "Checking the choice"). Reversing
the trigger anew on the candidate asks the candidate itself, and costs one label's Neural Cleanse per check.

When Neural Cleanse flags no label of a suspect (MNIST's blended backdoor, for one), there is nothing
to check and :attr:`BackdoorCheck.targets` is empty: the check can only confirm the backdoors it can see.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn

from .neural_cleanse import MAD_CONSISTENCY, NeuralCleanseConfig, neural_cleanse, reverse_trigger


@dataclass
class SuspectFinding:
    """One suspect's Neural Cleanse verdict: its flagged labels and the median and MAD of its mask norms."""

    targets: list[int]
    median: float
    mad: float
    anomaly_index: float
    mask_l1: dict[int, float]

    def index(self, l1: float) -> float:
        """The anomaly index a mask of norm ``l1`` would have among this suspect's labels."""
        if l1 >= self.median:
            return 0.0
        return float("inf") if self.mad == 0 else (self.median - l1) / (MAD_CONSISTENCY * self.mad)


@dataclass
class BackdoorCheck:
    """Neural Cleanse's findings on the suspect(s), kept to check candidate models for the same backdoor."""

    findings: list[SuspectFinding]
    cfg: NeuralCleanseConfig
    seconds: float
    checks: list[dict] = field(default_factory=list)  # every candidate checked, in order

    @property
    def targets(self) -> list[int]:
        return sorted({label for f in self.findings for label in f.targets})

    @classmethod
    def from_suspects(cls, suspects: list[nn.Module], images: torch.Tensor, num_classes: int,
                      cfg: NeuralCleanseConfig | None = None, progress: bool = True) -> "BackdoorCheck":
        """Run Neural Cleanse on each suspect with clean ``images`` (the budget's fit part)."""
        cfg = cfg or NeuralCleanseConfig()
        findings, tick = [], time.time()
        for suspect in suspects:
            result = neural_cleanse(suspect, images, num_classes, cfg, progress=progress)
            norms = np.asarray(result.l1_norms)
            median = float(np.median(norms))
            findings.append(SuspectFinding(targets=list(result.flagged_labels), median=median,
                                           mad=float(np.median(np.abs(norms - median))),
                                           anomaly_index=float(min(result.anomaly_index, 1e6)),
                                           mask_l1={lab: round(v, 3) for lab, v in zip(result.labels, result.l1_norms)}))
        return cls(findings, cfg, time.time() - tick)

    def check(self, model: nn.Module, images: torch.Tensor, threshold: float, what: str = "") -> dict:
        """Reverse each suspect's flagged labels on ``model``: ``carries`` is true when any mask is still
        anomalous (index above ``threshold``) among that suspect's labels. The record is kept in :attr:`checks`."""
        tick, indices = time.time(), {}
        for finding in self.findings:
            for label in finding.targets:
                trigger = reverse_trigger(model, images, label, self.cfg)
                idx = finding.index(trigger.l1) if trigger.converged else 0.0  # no mask reaches the target: no backdoor
                indices[label] = max(indices.get(label, 0.0), idx)
        record = {"model": what, "anomaly_index": {str(k): round(min(v, 1e6), 3) for k, v in indices.items()},
                  "carries": any(v > threshold for v in indices.values()), "seconds": round(time.time() - tick, 1)}
        self.checks.append(record)
        return record

    def to_dict(self) -> dict:
        return {"suspects": [{"targets": f.targets, "anomaly_index": round(f.anomaly_index, 3),
                              "median_mask_l1": round(f.median, 3), "mask_l1": f.mask_l1} for f in self.findings],
                "checks": self.checks, "seconds": round(self.seconds + sum(c["seconds"] for c in self.checks), 1)}
