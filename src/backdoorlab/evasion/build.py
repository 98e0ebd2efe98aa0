"""The evasion attacks by name: each attack's module registers a builder ``build(model, eps, **kwargs) ->
Attack`` with a config that lists its settings (fields set by a ``backdoorlab robustness`` flag name it), and
traits: ``eps`` (a norm-bounded attack that needs an epsilon), ``targeted_only`` (needs a target class),
``fitted`` (a universal attack trained on training images before it is applied) and ``default_images`` (how
many test images the command attacks when not told; None: all). :func:`make_attack` and the CLI ask
:data:`EVASION_ATTACKS`, so a new attack is one module."""

from __future__ import annotations

from torch import nn

from ..errors import BackdoorlabError
from ..registry import Registry
from .base import Attack

EVASION_ATTACKS = Registry("evasion attack", traits={"eps": False, "targeted_only": False, "fitted": False,
                                                      "default_images": None})


def names_text(names) -> str:
    """``a, b and c``: attack names in a help text or message."""
    names = list(names)
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


def make_attack(name: str, model: nn.Module, eps=None, **kwargs) -> Attack:
    """Build an attack by name (``fgsm``, ``pgd``, ``pgd-l2``, ``patch``, ``one-pixel``: see
    :data:`EVASION_ATTACKS`); ``kwargs`` are its constructor's arguments."""
    entry = EVASION_ATTACKS.entry(name)
    if entry.traits["eps"]:
        if eps is None:
            raise BackdoorlabError(f"the {name} attack needs an epsilon (--eps)")
        return entry.run(model, eps, **kwargs)
    if eps is not None:
        raise BackdoorlabError(f"the {name} attack has no epsilon; --eps applies to "
                               f"{names_text(EVASION_ATTACKS.names(eps=True))}")
    return entry.run(model, **kwargs)
