"""What a planted backdoor is: a trigger plus a label mapping. Used by poisoning and by ASR evaluation."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import BackdoorlabError, valid_names
from ..triggers import trigger_from_dict

MODES = ("all-to-one", "all-to-all")


@dataclass
class Backdoor:
    """A trigger and the labels it should produce.

    ``all-to-one``: every triggered input should be classified as ``target``.
    ``all-to-all``: a triggered input of class i should be classified as (i + 1) mod K.
    """

    trigger: object
    mode: str = "all-to-one"
    target: int = 0

    def __post_init__(self):
        if self.mode not in MODES:
            raise BackdoorlabError(f"unknown backdoor mode {self.mode!r}; valid: {valid_names(MODES)}")

    def check(self, num_classes: int) -> None:
        if self.mode == "all-to-one" and not 0 <= self.target < num_classes:
            raise BackdoorlabError(f"target label {self.target} is out of range for {num_classes} classes "
                                   f"(valid: 0..{num_classes - 1})")

    def target_labels(self, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
        """The labels the attacker wants for triggered inputs whose true labels are ``labels``."""
        if self.mode == "all-to-one":
            return torch.full_like(labels, self.target)
        return (labels + 1) % num_classes

    def eligible(self, labels: torch.Tensor) -> torch.Tensor:
        """Boolean mask of inputs that count for ASR: all-to-one excludes those already of the target class."""
        if self.mode == "all-to-one":
            return labels != self.target
        return torch.ones_like(labels, dtype=torch.bool)

    def to_dict(self) -> dict:
        d = {"trigger": self.trigger.to_dict(), "mode": self.mode}
        if self.mode == "all-to-one":
            d["target"] = self.target
        return d


def backdoor_from_dict(spec: dict) -> Backdoor:
    try:
        return Backdoor(trigger_from_dict(spec["trigger"]), spec.get("mode", "all-to-one"), int(spec.get("target", 0)))
    except (KeyError, TypeError) as e:
        raise BackdoorlabError(f"malformed backdoor description {spec!r}: {e}")
