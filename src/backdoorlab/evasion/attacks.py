"""The evasion attacks, registered (``ATTACKS``: their names, in registration order), and the names the former
single module offered: the attacks now live one per module (``fgsm.py``, ``pgd.py``, ``patch.py``, ``one_pixel.py``), their shared
pieces in ``base.py`` and the measurement in ``robustness.py``."""

from __future__ import annotations

from ..registry import import_plugins

# every module of the package, which registers its attack; the built-in ones in listing order (fgsm after pgd:
# FGSM is one step of PGD)
import_plugins("backdoorlab.evasion", first=("pgd", "fgsm", "patch", "one_pixel"))
from .base import (LOSSES, NORMS, Attack, attack_loss, eval_mode, frozen, margin_loss,  # noqa: F401
                   parse_eps)
from .build import EVASION_ATTACKS, make_attack  # noqa: F401
from .fgsm import FGSM  # noqa: F401
from .one_pixel import OnePixel  # noqa: F401
from .patch import AdversarialPatch  # noqa: F401
from .pgd import PGD  # noqa: F401
from .robustness import robust_accuracy  # noqa: F401

ATTACKS = tuple(EVASION_ATTACKS)
