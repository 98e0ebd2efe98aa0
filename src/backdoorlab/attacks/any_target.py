"""A trigger whose target class is gone: a teacher's BadNets trigger in a student that lacks its target class.

There is no target label to count, so the attack success rate is the largest share of triggered test images that
any one class receives (each class counted over the test images not of that class): what an attacker could get by
choosing the target after seeing the student. A trigger that a new classifier has made harmless spreads its
images over the classes as the clean images are (about 1/K plus the clean error); one that survived piles them on
one class.
"""

from __future__ import annotations

import torch

from ..errors import BackdoorlabError
from ..triggers import trigger_from_dict
from .backdoor import register_backdoor_kind


class AnyTargetBackdoor:
    """A trigger with no target label; :meth:`measure` reports the best single class (see the module docstring)."""

    kind = "any-target"
    mode = "all-to-one"

    def __init__(self, trigger):
        self.trigger = trigger

    @property
    def parts(self):
        return [self]

    def check(self, num_classes: int) -> None:
        if num_classes < 2:
            raise BackdoorlabError("an any-target backdoor needs at least two classes")

    def eligible(self, labels: torch.Tensor) -> torch.Tensor:
        return torch.ones_like(labels, dtype=torch.bool)

    def target_labels(self, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
        raise BackdoorlabError("this trigger's target class is not among the model's classes, so it has no target "
                               "label to stamp images for")

    def measure(self, model, x: torch.Tensor, y: torch.Tensor, num_classes: int, batch_size: int = 256) -> dict:
        from ..metrics import accuracy, predict

        pred = predict(model, x, batch_size, transform=self.trigger.apply)
        per_class = {}
        for c in range(num_classes):
            keep = y != c
            per_class[c] = accuracy(pred[keep], torch.full_like(y[keep], c)) if bool(keep.any()) else 0.0
        best = max(per_class, key=per_class.get)
        return {"attack_success_rate": per_class[best], "robust_accuracy": accuracy(pred, y), "best_target": best,
                "attack_success_rate_per_class": {str(c): v for c, v in per_class.items()}}

    def to_dict(self) -> dict:
        return {"kind": self.kind, "trigger": self.trigger.to_dict()}


register_backdoor_kind(AnyTargetBackdoor.kind, lambda spec: AnyTargetBackdoor(trigger_from_dict(spec["trigger"])))
