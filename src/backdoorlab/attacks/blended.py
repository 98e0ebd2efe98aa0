"""Blended (Chen et al. 2017, "Targeted Backdoor Attacks on Deep Learning Systems Using Data Poisoning"):
poisoned images are blended with a key pattern, x' = (1 - alpha) x + alpha k, where k is seeded noise or an
image file, with separate alphas for poisoning and for test time."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Config, option
from ..triggers import BlendTrigger
from .backdoor import Backdoor
from .build import TRAINING_ATTACKS
from .poison import PoisoningAttack


@dataclass
class BlendedConfig(Config):
    """The key pattern and its strengths: see :class:`~backdoorlab.triggers.BlendTrigger` (``test_alpha``:
    None keeps ``alpha``)."""

    pattern: str = option("noise", flag="--blend-pattern")
    alpha: float = option(0.2, flag="--alpha")
    test_alpha: float | None = option(None, flag="--test-alpha")
    seed: int = 0

    def trigger(self) -> BlendTrigger:
        return BlendTrigger(self.pattern, self.alpha, self.test_alpha, self.seed)


@TRAINING_ATTACKS.register("blended", BlendedConfig,
                           "Blended (Chen et al. 2017): poisoned images are blended with a key pattern, seeded noise "
                           "at alpha 0.2 by default.")
def blended(cfg: BlendedConfig, *, targets: list[int], mode: str, poison_rate: float, stamp: str,
            image_shape=None) -> PoisoningAttack:
    return PoisoningAttack("blended", Backdoor(cfg.trigger(), mode, targets[0]), poison_rate, stamp)
