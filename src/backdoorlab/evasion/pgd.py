"""Projected gradient descent (Madry et al. 2018) in the l-inf or l2 ball, with random starts and restarts."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from ..device import to_device
from ..config import Config, option
from .base import LOSSES, NORMS, Attack, _check_choice, _check_positive_int, _norm, attack_loss, parse_eps
from .build import EVASION_ATTACKS


class PGD(Attack):
    """Projected gradient descent (Madry et al. 2018) in the l-inf or l2 ball of radius ``eps``.

    Args:
        model: maps images in [0, 1] to logits.
        eps: radius of the ball (pixel units, images in [0, 1]); e.g. 0.3 or 8/255 (l-inf), 2.0 (l2).
        steps: gradient steps per restart.
        step_size: step length (l-inf: per pixel; l2: of the whole step); default ``2.5 * eps / steps``.
        norm: ``"linf"`` (signed-gradient steps) or ``"l2"`` (normalised-gradient steps).
        random_start: start from a uniformly random point of the ball (else from the image itself).
        restarts: independent random starts; per image the first successful one is kept (else the one with the
            highest loss).
        loss: ``"ce"`` or ``"margin"`` (see the module docstring).
        target: a class to push every image towards (targeted), or None (untargeted).
    """

    def __init__(self, model: nn.Module, eps: float, steps: int = 40, step_size: float | None = None,
                 norm: str = "linf", random_start: bool = True, restarts: int = 1, loss: str = "ce",
                 target: int | None = None, batch_size: int = 500, seed: int = 0):
        super().__init__(model, target, batch_size, seed)
        self.eps = parse_eps(eps)
        self.steps = _check_positive_int(steps, "number of steps")
        self.restarts = _check_positive_int(restarts, "number of restarts")
        self.step_size = 2.5 * self.eps / self.steps if step_size is None else parse_eps(step_size)
        _check_choice(norm, NORMS, "norm")
        _check_choice(loss, LOSSES, "loss")
        self.norm, self.loss, self.random_start = norm, loss, bool(random_start)

    def config(self) -> dict:
        return {"attack": "pgd" if self.steps > 1 or self.random_start else "fgsm", "eps": self.eps,
                "steps": self.steps, "step_size": self.step_size, "norm": self.norm,
                "random_start": self.random_start, "restarts": self.restarts, "loss": self.loss,
                "target": self.target, "seed": self.seed}

    def _start(self, x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
        if not self.random_start:
            return x.clone()
        if self.norm == "linf":
            delta = (torch.rand(x.shape, generator=g) * 2 - 1) * self.eps
        else:  # uniform in the l2 ball: a random direction, radius eps * u^(1/d)
            d = x[0].numel()
            direction = torch.randn(x.shape, generator=g)
            direction = direction / _norm(direction)
            radius = self.eps * torch.rand(len(x), generator=g).pow(1.0 / d).view(-1, 1, 1, 1)
            delta = direction * radius
        return (x + to_device(delta, x.device)).clamp(0, 1)  # drawn on the host, as on a CPU run

    def _project(self, x_adv: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        delta = x_adv - x
        if self.norm == "linf":
            delta = delta.clamp(-self.eps, self.eps)
        else:
            delta = delta * (self.eps / _norm(delta)).clamp(max=1.0)
        return (x + delta).clamp(0, 1)

    def _run(self, x, labels, targets, g, score: bool = True):
        """One restart: returns (x_adv, per-sample loss, per-sample success); without ``score`` only x_adv."""
        y = labels if targets is None else targets
        x_adv = self._start(x, g)
        for _ in range(self.steps):
            x_adv.requires_grad_(True)
            loss = attack_loss(self.model(x_adv), y, self.loss, targets is not None)
            grad, = torch.autograd.grad(loss.sum(), x_adv)
            with torch.no_grad():
                if self.norm == "linf":
                    x_adv = x_adv + self.step_size * grad.sign()
                else:
                    x_adv = x_adv + self.step_size * grad / _norm(grad)
                x_adv = self._project(x_adv, x)
        if not score:
            return x_adv.detach()
        with torch.no_grad():
            logits = self.model(x_adv)
            return (x_adv.detach(), attack_loss(logits, y, self.loss, targets is not None),
                    self.success(logits, labels, targets))

    def _attack(self, x, labels, targets, g):
        if self.restarts == 1:
            return self._run(x, labels, targets, g, score=False)
        best, best_loss, done = self._run(x, labels, targets, g)
        for _ in range(self.restarts - 1):
            todo = (~done).nonzero()[:, 0]
            if len(todo) == 0:
                break
            adv, loss, ok = self._run(x[todo], labels[todo], None if targets is None else targets[todo], g)
            better = ok | (loss > best_loss[todo])
            idx = todo[better]
            best[idx], best_loss[idx], done[idx] = adv[better], loss[better], ok[better]
        return best


@dataclass
class PGDConfig(Config):
    """The settings of :class:`PGD` other than epsilon (see its docstring); ``flag``: the ``backdoorlab
    robustness`` option that sets a field."""

    steps: int = option(40, flag="--steps")
    step_size: float | None = option(None, flag="--step-size", parse=parse_eps)
    norm: str = option("linf", choices=NORMS)
    random_start: bool = True
    restarts: int = option(1, flag="--restarts")
    loss: str = option("ce", choices=LOSSES, flag="--loss")
    target: int | None = option(None, flag="--target")
    batch_size: int = option(500, flag="--batch-size")
    seed: int = option(0, flag="--seed")


@dataclass
class PGDL2Config(PGDConfig):
    """:class:`PGDConfig` in the l2 ball."""

    norm: str = option("l2", choices=NORMS)


@EVASION_ATTACKS.register("pgd", PGDConfig, "Projected gradient descent in the l-inf ball (Madry et al. 2018).",
                          eps=True)
def build_pgd(model: nn.Module, eps, **kwargs) -> PGD:
    return PGD(model, eps, **kwargs)


@EVASION_ATTACKS.register("pgd-l2", PGDL2Config, "Projected gradient descent in the l2 ball (Madry et al. 2018).",
                          eps=True)
def build_pgd_l2(model: nn.Module, eps, **kwargs) -> PGD:
    kwargs["norm"] = "l2"
    return PGD(model, eps, **kwargs)
