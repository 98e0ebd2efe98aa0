"""The training-time attacks by name: their registry, :data:`TRAINING_ATTACKS`, and :func:`build_attack`, which
builds any of them from a name and options and checks it against the data it will meet.

Each attack's module registers it, as ``@TRAINING_ATTACKS.register(name, ConfigClass, description, **traits)``
on a function called as ``fn(cfg, *, targets, mode, poison_rate, stamp, image_shape)`` that returns the attack
object (``poison``, ``batch_hook``, ``backdoor``, ``to_dict``; see :mod:`.poison`); an attack that plants one
trigger made from its config registers with :func:`register_trigger_attack` instead. The config's fields are the
attack's own settings (its trigger's, or for the triggerless attack its training's); each field that a
command-line flag sets names that flag (:func:`backdoorlab.config.option`). The package
``backdoorlab.attacks`` imports every attack's module, in the order ``backdoorlab list`` shows them.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, ClassVar, Sequence

import torch

from ..config import Config
from ..errors import BackdoorlabError, valid_names
from ..registry import Registry
from .backdoor import Backdoor
from .poison import PoisoningAttack

TRAINING_ATTACKS = Registry("attack", traits={
    # poisons training data (poison_rate, stamp); False: planted by the training procedure itself
    "poisons_data": True,
    # takes several target labels (all-to-one), one trigger each
    "multi_target": False,
    # the backdoor fires only in a student transfer-learned from the trained model (`backdoorlab transfer`), so the
    # trained model's own ASR measures nothing and a sweep, which has no transfer step, cannot measure it
    "fires_in_student": False,
})

DEFAULT_POISON_RATE = 0.1
DEFAULT_STAMP = "data"


@dataclasses.dataclass
class TriggerConfig(Config):
    """The settings of an attack that plants one trigger: its fields are the arguments of its trigger class,
    ``trigger_type``, which :meth:`trigger` calls with them (a config whose fields choose between triggers,
    such as badnets' patch or picture, overrides :meth:`trigger` instead)."""

    trigger_type: ClassVar[type]

    def trigger(self):
        return self.trigger_type(**{f.name: getattr(self, f.name) for f in dataclasses.fields(self)})


def register_trigger_attack(name: str, config: type[TriggerConfig], description: str, **traits) -> Callable:
    """Register the data-poisoning attack ``name`` that plants its config's one trigger for the first target
    label (see :class:`TriggerConfig`); returns the registered function."""

    def run(cfg: TriggerConfig, *, targets: list[int], mode: str, poison_rate: float, stamp: str,
            image_shape=None) -> PoisoningAttack:
        return PoisoningAttack(name, Backdoor(cfg.trigger(), mode, targets[0]), poison_rate, stamp)

    return TRAINING_ATTACKS.register(name, config, description, **traits)(run)


def targets_of(target: int | Sequence[int]) -> list[int]:
    """One target label or several, as a list of ints."""
    return [int(t) for t in target] if isinstance(target, (list, tuple)) else [int(target)]


def make_poisoning_attack(name: str, *, target: int | list[int] = 0, mode: str = "all-to-one",
                          poison_rate: float = DEFAULT_POISON_RATE, trigger=None, stamp: str = DEFAULT_STAMP,
                          image_shape: tuple[int, int, int] | None = None, **trigger_args) -> PoisoningAttack:
    """Create a data-poisoning attack by name.

    Default triggers: ``badnets`` a 3x3 white square at the bottom-right; ``blended`` seeded uniform noise,
    alpha 0.2; ``dynamic`` a random 4x4 pattern at one of the four corners for one target, or, with several
    targets, at one of the target's own positions around the image border (``image_shape`` (C, H, W) needed).
    ``trigger_args`` are the fields of the attack's config (its trigger's arguments); ``trigger``: a ready trigger
    instead. ``target`` may be a list for ``dynamic``.
    """
    entry = TRAINING_ATTACKS.entry(name)
    if not entry.traits["poisons_data"]:
        raise BackdoorlabError(f"{name} is not a data-poisoning attack; valid: "
                               f"{valid_names(TRAINING_ATTACKS.names(poisons_data=True))}")
    targets = targets_of(target)
    if len(targets) > 1 and (not entry.traits["multi_target"] or mode != "all-to-one"):
        raise BackdoorlabError(f"several target labels need the {' or '.join(TRAINING_ATTACKS.names(multi_target=True))}"
                               f" attack in all-to-one mode")
    if trigger is not None and trigger_args:
        raise BackdoorlabError("give either a trigger or trigger arguments, not both")
    if trigger is not None:
        if len(targets) > 1:
            raise BackdoorlabError(f"a multi-target {name} attack makes its own triggers; pass trigger arguments")
        return PoisoningAttack(name, Backdoor(trigger, mode, targets[0]), poison_rate, stamp)
    cfg = entry.config.from_options(trigger_args, owner=name)
    return entry.run(cfg, targets=targets, mode=mode, poison_rate=poison_rate, stamp=stamp, image_shape=image_shape)


def build_attack(name: str, *, target: int | Sequence[int] = 0, mode: str = "all-to-one",
                 poison_rate: float | None = None, stamp: str | None = None,
                 image_shape: tuple[int, int, int] | None = None, num_classes: int | None = None, **options):
    """Build training-time attack ``name`` (``backdoorlab list`` shows them) for images of ``image_shape``
    (C, H, W) and ``num_classes`` labels: what ``backdoorlab train --attack NAME`` plants.

    ``options`` are the attack's config fields (``backdoorlab.attacks.TRAINING_ATTACKS[name].config``), as
    values or as command-line text (``position="3,4"``). ``poison_rate`` (default 0.1) and ``stamp`` (default
    ``"data"``) are for the attacks that poison data. With ``image_shape`` and ``num_classes`` the target labels
    and the triggers are checked against the data here, before any training."""
    entry = TRAINING_ATTACKS.entry(name)
    if entry.traits["poisons_data"]:
        attack = make_poisoning_attack(name, target=target, mode=mode, image_shape=image_shape,
                                       poison_rate=DEFAULT_POISON_RATE if poison_rate is None else poison_rate,
                                       stamp=DEFAULT_STAMP if stamp is None else stamp, **options)
    else:
        if poison_rate is not None or stamp is not None:
            raise BackdoorlabError(f"the {name} attack poisons no data: poison_rate and stamp do not apply")
        cfg = entry.config.from_options(options, owner=name)
        attack = entry.run(cfg, targets=targets_of(target), mode=mode, poison_rate=None, stamp=None,
                           image_shape=image_shape)
    if num_classes is not None:
        attack.backdoor.check(num_classes)
    if image_shape is not None:
        for part in attack.backdoor.parts:  # a trigger that does not fit the images fails here, before any training
            if getattr(part, "trigger", None) is not None:
                part.trigger.apply(torch.zeros(1, *image_shape))
    return attack
