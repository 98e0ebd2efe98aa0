"""A trigger-free estimate of how much of a suspect's backdoor a repaired model keeps.

The sanitizer must not export a model that still obeys the trigger, and it never sees the trigger. What it can
see is the suspect: Neural Cleanse, run once on the suspect with the clean budget, reverse-engineers for every
label the smallest patch that sends clean images there. The patch of the backdoor's target is (a part of) the
trigger, so a model that still carries the backdoor still follows it, and a model that has lost it does not.
The probe's reading of a model is the share of held-out clean images, not of that label, that the suspect's
reversed trigger sends to its label: near 100% on the suspect, a few percent on a backdoor-free model.

Which label: those Neural Cleanse flags, else the one with the smallest mask (on MNIST's blended suspect nothing
is flagged, and the smallest mask is still the target's). When that label is not the backdoor's target, the
patch is an adversarial patch of the suspect and the probe reads low on any model that has moved away from it,
backdoor or not: a low reading is evidence, not proof, and the sanitizer uses the probe only to move further
from the suspect or to warn, never to move closer.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..budget import CleanBudget
from .neural_cleanse import NeuralCleanseConfig, ReversedTrigger, neural_cleanse, trigger_success


@dataclass
class BackdoorProbe:
    """The reversed triggers of the suspect(s)' probable targets, and how they were found."""

    triggers: list[ReversedTrigger]
    findings: list[dict]  # per suspect: Neural Cleanse's verdict (anomaly index, flagged labels, probed labels)
    seconds: float

    @classmethod
    def from_suspects(cls, suspects: list[nn.Module], images: torch.Tensor, num_classes: int,
                      cfg: NeuralCleanseConfig | None = None, progress: bool = True) -> "BackdoorProbe":
        """Run Neural Cleanse on each suspect with clean ``images`` (the budget's fit part) and keep the reversed
        trigger of every flagged label, or of the smallest mask when none is flagged."""
        triggers, findings, seconds = [], [], 0.0
        for suspect in suspects:
            result = neural_cleanse(suspect, images, num_classes, cfg, progress=progress)
            labels = result.labels_to_unlearn()
            triggers += [result.trigger_for(label) for label in labels]
            findings.append({"probed_labels": labels, "flagged_labels": result.flagged_labels,
                             "anomaly_index": round(float(min(result.anomaly_index, 1e6)), 4),
                             "mask_l1": [round(result.trigger_for(label).l1, 2) for label in labels]})
            seconds += result.seconds
        return cls(triggers, findings, seconds)

    def read(self, model: nn.Module, part: CleanBudget) -> float:
        """The largest share, over the probed labels, of ``part``'s images of other labels that ``model`` sends
        to the label once stamped with its reversed trigger."""
        readings = []
        for trigger in self.triggers:
            others = part.x[part.y != trigger.label]
            if len(others):
                readings.append(trigger_success(model, others, trigger))
        return max(readings, default=0.0)

    def to_dict(self) -> dict:
        return {"findings": self.findings, "seconds": round(self.seconds, 1)}
