"""Blended (Chen et al. 2017, "Targeted Backdoor Attacks on Deep Learning Systems Using Data Poisoning"):
poisoned images are blended with a key pattern, x' = (1 - alpha) x + alpha k, where k is seeded noise or an
image file, with separate alphas for poisoning and for test time."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import option
from ..triggers import BlendTrigger
from .build import TriggerConfig, register_trigger_attack


@dataclass
class BlendedConfig(TriggerConfig):
    """The key pattern and its strengths: see :class:`~backdoorlab.triggers.BlendTrigger` (``test_alpha``:
    None keeps ``alpha``)."""

    trigger_type = BlendTrigger
    pattern: str = option("noise", flag="--blend-pattern")
    alpha: float = option(0.2, flag="--alpha")
    test_alpha: float | None = option(None, flag="--test-alpha")
    seed: int = 0


blended = register_trigger_attack("blended", BlendedConfig,
                                  "Blended (Chen et al. 2017): poisoned images are blended with a key pattern, seeded "
                                  "noise at alpha 0.2 by default.")
