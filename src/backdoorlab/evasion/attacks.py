"""The evasion attacks by name (:func:`make_attack`), and the names the former single module offered: the
attacks now live one per module (``fgsm.py``, ``pgd.py``, ``patch.py``, ``one_pixel.py``), their shared
pieces in ``base.py`` and the measurement in ``robustness.py``."""

from __future__ import annotations

from torch import nn

from ..errors import BackdoorlabError
from .base import (LOSSES, NORMS, Attack, _check_choice, attack_loss, eval_mode, frozen,  # noqa: F401
                   margin_loss, parse_eps)
from .fgsm import FGSM
from .one_pixel import OnePixel
from .patch import AdversarialPatch
from .pgd import PGD
from .robustness import robust_accuracy  # noqa: F401

ATTACKS = ("fgsm", "pgd", "pgd-l2", "patch", "one-pixel")


def make_attack(name: str, model: nn.Module, eps=None, **kwargs) -> Attack:
    """Build an attack by name (``fgsm``, ``pgd``, ``pgd-l2``, ``patch``, ``one-pixel``)."""
    _check_choice(name, ATTACKS, "evasion attack")
    if name in ("fgsm", "pgd", "pgd-l2"):
        if eps is None:
            raise BackdoorlabError(f"the {name} attack needs an epsilon (--eps)")
        if name == "fgsm":
            keep = {k: v for k, v in kwargs.items() if k in ("loss", "target", "batch_size", "seed", "norm")}
            return FGSM(model, eps, **keep)
        if name == "pgd-l2":
            kwargs["norm"] = "l2"
        return PGD(model, eps, **kwargs)
    if eps is not None:
        raise BackdoorlabError(f"the {name} attack has no epsilon; --eps applies to fgsm, pgd and pgd-l2")
    if name == "patch":
        return AdversarialPatch(model, **kwargs)
    return OnePixel(model, **kwargs)
