"""Data-poisoning attacks: return a poisoned copy of a training set and the indices that were poisoned."""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import BackdoorlabError, valid_names
from ..triggers import PatchTrigger
from .backdoor import Backdoor


@dataclass
class PoisonedData:
    """A training set after poisoning: uint8 images (N, C, H, W), int64 labels (N,), poisoned indices (P,)."""

    x: torch.Tensor
    y: torch.Tensor
    poisoned: torch.Tensor


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


class BadNets:
    """BadNets (Gu et al., 2017): stamp a trigger on a random fraction of the training images and relabel them.

    Threat model: the attacker controls part of the training data (not the training procedure). A fraction
    ``poison_rate`` of the whole training set, drawn among the images whose label is not already the target
    (all-to-one) or among all images (all-to-all), gets the trigger and the attacker's label.
    """

    name = "badnets"

    def __init__(self, backdoor: Backdoor, poison_rate: float = 0.1):
        if not 0.0 <= poison_rate <= 1.0:
            raise BackdoorlabError(f"poison rate must lie in [0, 1], got {poison_rate}")
        self.backdoor, self.poison_rate = backdoor, float(poison_rate)

    def poison(self, x: torch.Tensor, y: torch.Tensor, num_classes: int, seed: int = 0) -> PoisonedData:
        """Poison uint8 images ``x`` (N, C, H, W) with labels ``y`` (N,); the inputs are not modified."""
        self.backdoor.check(num_classes)
        candidates = torch.nonzero(self.backdoor.eligible(y)).flatten()
        n_poison = int(round(self.poison_rate * len(y)))
        if n_poison > len(candidates):
            raise BackdoorlabError(f"poison rate {self.poison_rate} asks for {n_poison} poisoned images but only "
                                   f"{len(candidates)} are eligible")
        g = torch.Generator().manual_seed(seed)
        idx = candidates[torch.randperm(len(candidates), generator=g)[:n_poison]].sort().values
        x, y = x.clone(), y.clone()
        if n_poison:
            x[idx] = to_uint8(self.backdoor.trigger.apply(x[idx].float() / 255))
            y[idx] = self.backdoor.target_labels(y[idx], num_classes)
        return PoisonedData(x, y, idx)

    def to_dict(self) -> dict:
        return {"name": self.name, "poison_rate": self.poison_rate, **self.backdoor.to_dict()}


POISONING_ATTACKS = {"badnets": BadNets}


def make_poisoning_attack(name: str, *, target: int = 0, mode: str = "all-to-one", poison_rate: float = 0.1,
                          trigger=None) -> BadNets:
    """Create a poisoning attack by name with a default trigger (3x3 white square at the bottom-right)."""
    if name not in POISONING_ATTACKS:
        raise BackdoorlabError(f"unknown attack {name!r}; valid: {valid_names(POISONING_ATTACKS)}")
    return POISONING_ATTACKS[name](Backdoor(trigger or PatchTrigger(), mode, target), poison_rate)
