"""The fast gradient sign method (Goodfellow et al. 2015): PGD with one step of size epsilon from the image."""

from __future__ import annotations

from torch import nn

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
