"""Dynamic backdoor (Salem et al., "Dynamic Backdoor Attacks Against Machine Learning Models", random backdoor):
a pattern drawn at random for every poisoned image, pasted at a location drawn from an allowed set; one or
several target labels, each with its own set of locations."""

from __future__ import annotations

from dataclasses import dataclass

from ..config import Config, option
from ..errors import BackdoorlabError
from ..triggers import RandomPatchTrigger, border_locations, deal_locations, parse_position
from .backdoor import Backdoor, MultiBackdoor
from .build import TRAINING_ATTACKS
from .poison import PoisoningAttack


def parse_location_sets(text: str) -> list[list]:
    """Command-line locations, ``'R,C;R,C;...'`` (corner names allowed), one set per target separated by
    ``'|'`` -> a list of sets of positions."""
    sets = [[parse_position(p.strip()) for p in group.split(";") if p.strip()] for group in text.split("|")]
    if any(not s for s in sets):
        raise BackdoorlabError(f"a set of trigger locations is empty: {text!r}")
    return sets


def _is_position(p) -> bool:
    return isinstance(p, str) or (len(p) == 2 and all(isinstance(v, int) for v in p))


@dataclass
class DynamicConfig(Config):
    """The random patches: see :class:`~backdoorlab.triggers.RandomPatchTrigger`. ``locations``: the allowed
    positions (default: the four corners with one target; with several, the image border dealt out between
    them), or one set per target; target i's patterns are drawn with ``seed + i``."""

    size: int = option(4, flag="--trigger-size")
    locations: list | None = option(None, parse=parse_location_sets, flag="--locations")
    pattern: str = option("uniform", flag="--dynamic-pattern")
    margin: int = 1
    seed: int = 0


@TRAINING_ATTACKS.register("dynamic", DynamicConfig,
                           "Dynamic backdoor (Salem et al.): a random pattern at a random allowed location; one or "
                           "several targets, each with its own locations.", multi_target=True)
def dynamic(cfg: DynamicConfig, *, targets: list[int], mode: str, poison_rate: float, stamp: str,
            image_shape: tuple[int, int, int] | None = None) -> PoisoningAttack:
    """One target: one trigger at ``cfg.locations``. Several (all-to-one): a trigger per target, at the target's
    own location set, given or dealt from the border of images of ``image_shape`` (C, H, W)."""
    locations = cfg.locations
    if len(targets) == 1:
        if locations and not _is_position(locations[0]):  # location sets: one, for the one target
            if len(locations) != 1:
                raise BackdoorlabError(f"1 target needs 1 location set, got {len(locations)}")
            locations = locations[0]
        trigger = RandomPatchTrigger(cfg.size, locations, cfg.pattern, cfg.margin, cfg.seed)
        return PoisoningAttack("dynamic", Backdoor(trigger, mode, targets[0]), poison_rate, stamp)
    if image_shape is None and locations is None:
        raise BackdoorlabError("a multi-target dynamic attack needs the image shape to place its triggers")
    if locations is not None:
        sets = list(locations)
        if len(sets) != len(targets):
            raise BackdoorlabError(f"{len(targets)} targets need {len(targets)} location sets, got {len(sets)}")
    else:
        sets = deal_locations(border_locations(image_shape[1], image_shape[2], int(cfg.size), int(cfg.margin)),
                              len(targets))
    parts = [Backdoor(RandomPatchTrigger(cfg.size, sets[i], cfg.pattern, cfg.margin, int(cfg.seed) + i),
                      "all-to-one", t) for i, t in enumerate(targets)]
    return PoisoningAttack("dynamic", MultiBackdoor(parts), poison_rate, stamp)
