"""Fine-tuning with sharpness-aware minimization, FT-SAM (Zhu, Wei, Shen, Fan and Wu, ICCV 2023).

Threat model: the defender holds the suspect model and a small clean set and knows nothing of the trigger (the
same as fine-tuning). The paper's observation: with a small clean set, plain fine-tuning barely moves the
neurons that carry the backdoor, and those neurons tend to have larger weight norms than the others. FT-SAM
fine-tunes on the clean set with *adaptive* sharpness-aware minimization,

    min_w  max_{||e / |w| || <= rho}  L(w + e),

whose inner maximisation, solved to first order, perturbs each weight in proportion to its own magnitude,
``e = rho * w^2 * g / || |w| * g ||`` (``g``: the batch gradient at ``w``); the update then uses the gradient at
``w + e``. Large-norm weights get the largest perturbations, so minimising the worst loss in their neighbourhood
shrinks them and lets the clean loss steer the backdoor neurons out of their old minimum. With
``adaptive=false`` the ball is the plain L2 ball of SAM (Foret et al. 2021), ``e = rho * g / ||g||``.

Each step is two forward-backward passes over the same batch. The perturbed pass is a functional call with the
weights ``w + e`` (``torch.func.functional_call``): the model's own weights never hold the perturbed values, so
there is nothing to restore and the update is taken at ``w`` by the library's training loop
(:func:`backdoorlab.train.fit`: SGD with momentum and weight decay, seeded batches and augmentation). The
batch-norm running statistics are updated by the unperturbed pass only (the perturbed pass updates copies),
so they describe the weights the model keeps.

Defaults are the paper's (BackdoorBench's FT-SAM settings for CIFAR-10): adaptive SAM with rho 2, 100 epochs
over the clean budget in batches of 256, SGD with momentum 0.9 (no Nesterov) and weight decay 5e-4, learning
rate 0.01 annealed to zero by a cosine schedule, label smoothing 0.1. As everywhere in this library an epoch is
``len(budget) // batch_size`` full batches (the remainder of the shuffled budget is left out of that epoch).
The paper fine-tunes with the suspect's training augmentation; so does this repairer when run through the
repair run (it tunes the suspect rather than learning new features, so ``augment`` defaults to the data set's
training augmentation, as for ``finetune``). ``rho=0`` is plain fine-tuning with the same recipe (one pass per
step).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..augment import AUGMENTATIONS
from ..budget import CleanBudget
from ..config import Config, option
from ..errors import BackdoorlabError
from ..train import SCHEDULES, TrainConfig, fit, seed_everything
from .repair import REPAIRERS


def _finite_at_least(low: float):
    return lambda v: isinstance(v, (int, float)) and math.isfinite(v) and v >= low


@dataclass
class FinetuneSAMConfig(Config):
    """``rho``: radius of the weight perturbation (for adaptive SAM, of the perturbation divided elementwise by
    ``|w|``; 0: plain fine-tuning); ``adaptive``: adaptive SAM (the paper's) rather than SAM's plain L2 ball;
    ``label_smoothing``: of the cross-entropy of both passes. The rest is the fine-tuning recipe."""

    rho: float = option(2.0, check=(_finite_at_least(0), "a finite number >= 0 (0: plain fine-tuning)"))
    adaptive: bool = True
    epochs: int = option(100, check=(lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"))
    lr: float = option(0.01, check=(lambda v: _finite_at_least(0)(v) and v > 0, "a finite number > 0"))
    batch_size: int = option(256, check=(lambda v: isinstance(v, int) and v >= 1, "an integer >= 1"))
    momentum: float = option(0.9, check=(lambda v: _finite_at_least(0)(v) and v < 1, "in [0, 1)"))
    weight_decay: float = option(5e-4, check=(_finite_at_least(0), "a finite number >= 0"))
    label_smoothing: float = option(0.1, check=(lambda v: _finite_at_least(0)(v) and v < 1, "in [0, 1)"))
    schedule: str = option("cosine", choices=SCHEDULES)
    augment: str = option("none", choices=AUGMENTATIONS)
    seed: int = 0

    def train_config(self) -> TrainConfig:
        """The recipe for :func:`backdoorlab.train.fit` (the SAM step itself lives in the loss function)."""
        return TrainConfig(epochs=self.epochs, batch_size=self.batch_size, lr=self.lr, momentum=self.momentum,
                           weight_decay=self.weight_decay, schedule=self.schedule, augment=self.augment,
                           seed=self.seed, nesterov=False)


def sam_perturbation(params: list[torch.Tensor], grads: list[torch.Tensor | None], rho: float,
                     adaptive: bool = True) -> list[torch.Tensor]:
    """The first-order solution of ``max L(w + e)`` over the (adaptive) SAM ball of radius ``rho``.

    Adaptive: ``e = rho * w^2 * g / || |w| * g ||`` (so that ``|| e / |w| || = rho``); plain SAM:
    ``e = rho * g / ||g||``. The norm is taken over all the parameters together. A missing gradient counts as
    zero. Returns detached tensors shaped like ``params``."""
    grads = [torch.zeros_like(p) if g is None else g.detach() for p, g in zip(params, grads)]
    scaled = [p.detach().abs() * g if adaptive else g for p, g in zip(params, grads)]
    norm = torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(s) for s in scaled]))
    scale = rho / (norm + 1e-12)
    return [(p.detach().abs() * s if adaptive else s) * scale for p, s in zip(params, scaled)]


class SAMLoss:
    """``loss_fn(images, labels) -> (loss, logits)`` for :func:`backdoorlab.train.fit` that makes its step a SAM
    step: the returned loss is the cross-entropy at ``w + e`` (its gradient with respect to the model's
    parameters is the gradient at the perturbed point), the logits are the unperturbed pass's. Batches move to
    the model's device; logits come back on the labels' device. Records the sharpness ``L(w + e) - L(w)`` of
    every step."""

    def __init__(self, model: nn.Module, rho: float, adaptive: bool, label_smoothing: float):
        self.model, self.rho, self.adaptive, self.label_smoothing = model, rho, adaptive, label_smoothing
        self.names, self.params = zip(*[(n, p) for n, p in model.named_parameters() if p.requires_grad])
        self.sharpness: list[float] = []

    def _ce(self, logits: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, labels, label_smoothing=self.label_smoothing)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        device = self.params[0].device
        xb, yb = images.to(device), labels.to(device)
        logits = self.model(xb)
        loss = self._ce(logits, yb)
        if self.rho == 0:
            return loss, logits.detach().to(labels.device)
        grads = torch.autograd.grad(loss, self.params, allow_unused=True)  # the parameters' .grad stay untouched
        e = sam_perturbation(list(self.params), list(grads), self.rho, self.adaptive)
        weights = {n: p + d for n, p, d in zip(self.names, self.params, e)}
        buffers = {n: b.clone() for n, b in self.model.named_buffers()}  # BN statistics: from the pass at w
        perturbed = self._ce(functional_call(self.model, {**weights, **buffers}, (xb,)), yb)
        self.sharpness.append(perturbed.item() - loss.item())
        return perturbed, logits.detach().to(labels.device)


def _mean(values: list[float]) -> float | None:
    return round(sum(values) / len(values), 4) if values else None


@REPAIRERS.register("finetune-sam", FinetuneSAMConfig,
                    "FT-SAM (Zhu et al. 2023): fine-tuning with adaptive sharpness-aware minimization, which "
                    "shrinks the large-norm neurons that carry a backdoor.")
def finetune_sam(model: nn.Module, budget: CleanBudget, cfg: FinetuneSAMConfig | None = None, *,
                 progress: bool = True) -> tuple[nn.Module, dict]:
    """Return (FT-SAM-tuned copy of ``model``, info) using the clean ``budget`` only.

    info: the steps taken, the mean sharpness ``L(w + e) - L(w)`` of the first and of the last ten steps (how
    much worse the loss is at the perturbed weights; it falls as the weights reach a flatter region), the last
    epoch's training loss (at the perturbed weights) and accuracy, and the config."""
    cfg = cfg or FinetuneSAMConfig()
    if len(budget) < 1:
        raise BackdoorlabError("FT-SAM needs a clean budget of at least one image")
    work = copy.deepcopy(model)
    g = seed_everything(cfg.seed)
    work.train()
    loss_fn = SAMLoss(work, cfg.rho, cfg.adaptive, cfg.label_smoothing)
    history = fit(work.parameters(), loss_fn, budget.x, budget.y.long(), cfg.train_config(), progress=progress,
                  desc="finetune-sam", generator=g)
    info = {"steps": history["steps"],
            "sharpness_first_steps": _mean(loss_fn.sharpness[:10]),
            "sharpness_last_steps": _mean(loss_fn.sharpness[-10:]),
            "train_loss": round(history["loss"][-1], 4), "train_accuracy": round(history["accuracy"][-1], 4),
            "config": cfg.to_dict()}
    return work.eval(), info
