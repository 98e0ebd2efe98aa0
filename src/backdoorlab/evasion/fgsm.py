"""The fast gradient sign method (Goodfellow et al. 2015): PGD with one step of size epsilon from the image."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from ..config import Config, option
from .base import LOSSES, NORMS
from .build import EVASION_ATTACKS
from .pgd import PGD


class FGSM(PGD):
    """Fast gradient sign method (Goodfellow et al. 2015): one signed-gradient step of size ``eps`` (l-inf).

    ``norm="l2"`` gives the fast gradient method (one step of length ``eps`` along the normalised gradient).
    """

    def __init__(self, model: nn.Module, eps: float, norm: str = "linf", loss: str = "ce",
                 target: int | None = None, batch_size: int = 500, seed: int = 0):
        super().__init__(model, eps, steps=1, step_size=eps, norm=norm, random_start=False, restarts=1, loss=loss,
                         target=target, batch_size=batch_size, seed=seed)

    def config(self) -> dict:
        return {"attack": "fgsm", "eps": self.eps, "norm": self.norm, "loss": self.loss, "target": self.target}


@dataclass
class FGSMConfig(Config):
    """The settings of :class:`FGSM` other than epsilon; ``flag``: the ``backdoorlab robustness`` option that sets
    a field."""

    norm: str = option("linf", choices=NORMS)
    loss: str = option("ce", choices=LOSSES, flag="--loss")
    target: int | None = option(None, flag="--target")
    batch_size: int = option(500, flag="--batch-size")
    seed: int = option(0, flag="--seed")


@EVASION_ATTACKS.register("fgsm", FGSMConfig, "Fast gradient sign method: one signed-gradient step of size eps "
                          "(Goodfellow et al. 2015).", eps=True)
def build_fgsm(model: nn.Module, eps, **kwargs) -> FGSM:
    """FGSM ignores the iterative attacks' settings (steps, restarts, ...), so one set of options builds either."""
    keep = {k: v for k, v in kwargs.items() if k in ("loss", "target", "batch_size", "seed", "norm")}
    return FGSM(model, eps, **keep)
