"""BadNets (Gu, Dolan-Gavitt and Garg 2017): poison a fraction of the training set with a solid square patch,
by default 3x3 white at the bottom-right, relabelled to the target (or i -> i+1 mod K, all-to-all)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Config, option
from ..triggers import PatchTrigger, parse_position
from .backdoor import Backdoor
from .build import TRAINING_ATTACKS
from .poison import PoisoningAttack


@dataclass
class BadNetsConfig(Config):
    """The patch: see :class:`~backdoorlab.triggers.PatchTrigger` (``position``: a corner name or ROW,COL of its
    top-left pixel; ``value``: one pixel value or one per channel)."""

    size: int = option(3, flag="--trigger-size")
    position: str | tuple[int, int] = option("bottom-right", parse=parse_position, flag="--trigger-position")
    value: float | tuple[float, ...] = option(1.0, flag="--trigger-value")
    margin: int = 1

    def trigger(self) -> PatchTrigger:
        return PatchTrigger(self.size, self.position, self.value, self.margin)


@TRAINING_ATTACKS.register("badnets", BadNetsConfig,
                           "BadNets (Gu et al. 2017): poisoned images carry a solid square patch, 3x3 white at the "
                           "bottom-right by default.")
def badnets(cfg: BadNetsConfig, *, targets: list[int], mode: str, poison_rate: float, stamp: str,
            image_shape=None) -> PoisoningAttack:
    return PoisoningAttack("badnets", Backdoor(cfg.trigger(), mode, targets[0]), poison_rate, stamp)
