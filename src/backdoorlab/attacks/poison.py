"""Data-poisoning attacks: return a poisoned copy of a training set and the indices that were poisoned.

One class, :class:`PoisoningAttack`, does the poisoning for every trigger; the named attacks (``badnets``,
``blended``, ``dynamic``, each in its own module, registered in :data:`.build.TRAINING_ATTACKS` and built by
:func:`.build.make_poisoning_attack`) differ in their trigger and their paper.

Threat model of all of them: the attacker controls part of the training data, not the training procedure
(unless ``stamp="augmented"``, see :class:`PoisoningAttack`). Every attack also works all-to-all (label i ->
i+1 mod K).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from ..errors import BackdoorlabError, valid_names
from ..triggers import stamp_parts


@dataclass
class PoisonedData:
    """A training set after poisoning: uint8 images (N, C, H, W), int64 labels (N,), poisoned indices (P,).

    ``part`` (N,) says which part of a multi-target backdoor poisoned each image (-1: clean)."""

    x: torch.Tensor
    y: torch.Tensor
    poisoned: torch.Tensor
    part: torch.Tensor | None = None


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    return (images.clamp(0, 1) * 255).round().to(torch.uint8)


class PoisoningAttack:
    """Stamp a trigger on a random fraction of the training images and relabel them.

    A fraction ``poison_rate`` of the whole training set, drawn among the images whose label is not already the
    target (all-to-one) or among all images (all-to-all), gets the trigger (applied with ``training=True``) and
    the attacker's label. A multi-target backdoor splits the poisoned images evenly between its targets.

    ``stamp="data"`` (default) is data poisoning: the victim's augmentation then moves, mirrors or crops the
    trigger like any other pixels. ``stamp="augmented"`` is the outsourced-training threat model of the BadNets
    paper: the attacker runs the training, so the trigger is stamped on the chosen images after augmentation,
    in every epoch. With random crops of 4 pixels a corner trigger is otherwise often cut off in the
    poisoned batches, which then teach the target label without any trigger.
    """

    STAMPS = ("data", "augmented")

    def __init__(self, name: str, backdoor, poison_rate: float = 0.1, stamp: str = "data"):
        if not 0.0 <= poison_rate <= 1.0:
            raise BackdoorlabError(f"poison rate must lie in [0, 1], got {poison_rate}")
        if stamp not in self.STAMPS:
            raise BackdoorlabError(f"unknown trigger stamping {stamp!r}; valid: {valid_names(self.STAMPS)}")
        self.name, self.backdoor, self.poison_rate, self.stamp = name, backdoor, float(poison_rate), stamp

    def poison(self, x: torch.Tensor, y: torch.Tensor, num_classes: int, seed: int = 0) -> PoisonedData:
        """Poison uint8 images ``x`` (N, C, H, W) with labels ``y`` (N,); the inputs are not modified."""
        self.backdoor.check(num_classes)
        parts = self.backdoor.parts
        n_poison = int(round(self.poison_rate * len(y)))
        g = torch.Generator().manual_seed(seed)
        x, y = x.clone(), y.clone()
        part_of = torch.full((len(y),), -1, dtype=torch.long)
        taken = torch.zeros(len(y), dtype=torch.bool)
        for i, b in enumerate(parts):
            want = n_poison // len(parts) + (1 if i < n_poison % len(parts) else 0)
            candidates = torch.nonzero(b.eligible(y) & ~taken).flatten()
            if want > len(candidates):
                raise BackdoorlabError(f"poison rate {self.poison_rate} asks for {n_poison} poisoned images but "
                                       f"only {len(candidates)} are eligible")
            idx = candidates[torch.randperm(len(candidates), generator=g)[:want]].sort().values
            taken[idx] = True
            part_of[idx] = i
        for i, b in enumerate(parts):
            idx = torch.nonzero(part_of == i).flatten()
            if not len(idx):
                continue
            if self.stamp == "data":
                x[idx] = to_uint8(b.trigger.apply(x[idx].float() / 255, training=True, generator=g))
            y[idx] = b.target_labels(y[idx], num_classes)
        return PoisonedData(x, y, torch.nonzero(part_of >= 0).flatten(), part_of)

    def batch_hook(self, poisoned: PoisonedData, model=None):
        """For ``stamp="augmented"``: a training-loop hook stamping the trigger on the poisoned images of each
        augmented batch; None otherwise."""
        if self.stamp != "augmented":
            return None
        part_of = poisoned.part
        if part_of is None:  # poisoned data built elsewhere: one part
            part_of = torch.full((len(poisoned.y),), -1)
            part_of[poisoned.poisoned] = 0
        g = torch.Generator().manual_seed(12345)
        stamps = [lambda images, t=b.trigger: t.apply(images, training=True, generator=g) for b in self.backdoor.parts]

        def hook(images: torch.Tensor, labels: torch.Tensor, indices: torch.Tensor):
            return stamp_parts(images, part_of[indices], stamps), labels

        return hook

    def to_dict(self) -> dict:
        return {"name": self.name, "poison_rate": self.poison_rate, "stamp": self.stamp, **self.backdoor.to_dict()}


class BadNets(PoisoningAttack):
    """BadNets (Gu et al. 2017) with any trigger; see :class:`PoisoningAttack`."""

    def __init__(self, backdoor, poison_rate: float = 0.1, stamp: str = "data"):
        super().__init__("badnets", backdoor, poison_rate, stamp)
