"""BadNets (Gu, Dolan-Gavitt and Garg 2017): poison a fraction of the training set with a solid square patch,
by default 3x3 white at the bottom-right, relabelled to the target (or i -> i+1 mod K, all-to-all)."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import option
from ..triggers import PatchTrigger, parse_position
from .build import TriggerConfig, register_trigger_attack


@dataclass
class BadNetsConfig(TriggerConfig):
    """The patch: see :class:`~backdoorlab.triggers.PatchTrigger` (``position``: a corner name or ROW,COL of its
    top-left pixel; ``value``: one pixel value or one per channel)."""

    trigger_type = PatchTrigger
    size: int = option(3, flag="--trigger-size")
    position: str | tuple[int, int] = option("bottom-right", parse=parse_position, flag="--trigger-position")
    value: float | tuple[float, ...] = option(1.0, flag="--trigger-value")
    margin: int = 1


badnets = register_trigger_attack("badnets", BadNetsConfig,
                                  "BadNets (Gu et al. 2017): poisoned images carry a solid square patch, 3x3 white "
                                  "at the bottom-right by default.")
