"""Fine-tuning baseline: continue training a (suspect) model on the clean budget."""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from ..config import Config
from ..train import TrainConfig, fit, seed_everything
from .repair import REPAIRERS


@dataclass
class FinetuneConfig(Config):
    """Plain fine-tuning on the whole clean budget."""

    steps: int = 1000
    lr: float = 0.01
    batch_size: int = 128
    weight_decay: float = 5e-4
    augment: str = "none"
    seed: int = 0

    def validate(self):
        self.train_config()  # validates

    def train_config(self) -> TrainConfig:
        return finetune_recipe(self, self.steps)


def finetune_recipe(cfg, steps: int) -> TrainConfig:
    """The fine-tuning recipe of a repairer's config ``cfg`` (its ``lr``, ``batch_size``, ``weight_decay``,
    ``augment`` and ``seed``, as :class:`FinetuneConfig` has them) for ``steps`` optimizer steps."""
    return TrainConfig(epochs=0, steps=steps, lr=cfg.lr, batch_size=cfg.batch_size, weight_decay=cfg.weight_decay,
                       augment=cfg.augment, seed=cfg.seed)


def distillation_loss(logits: torch.Tensor, teacher_probs: torch.Tensor, temperature: float) -> torch.Tensor:
    """``T^2 * KL(teacher || student)`` at temperature ``T``; ``teacher_probs`` are softmax(teacher logits / T)."""
    return F.kl_div(F.log_softmax(logits / temperature, 1), teacher_probs, reduction="batchmean") * temperature ** 2


def finetune(model: nn.Module, x, y, cfg: TrainConfig, *, progress: bool = True, desc: str = "fine-tune",
             teacher: nn.Module | None = None, temperature: float = 4.0, alpha: float = 0.0,
             batch_hook=None, penalty=None, weights_at=None) -> nn.Module:
    """Return a copy of ``model`` trained on uint8 images ``x`` (N, C, H, W) with labels ``y``.

    With a ``teacher`` and ``alpha > 0`` the loss is ``(1 - alpha) * CE + alpha * T^2 * KL(teacher || model)`` at
    temperature ``T`` (knowledge distillation on the same clean images). ``batch_hook``: passed to
    :func:`train.fit` (e.g. to stamp some images of each batch). ``penalty``: ``penalty(model) -> scalar``, added
    to every batch's loss (the copy being trained is passed; FST's term on the classifier weights).
    ``weights_at``: ``weights_at(model) -> {name: tensor}``, parameters at which each batch's loss is computed
    instead of the model's own (a functional call; the tensors must depend on the model's parameters so the
    gradient reaches them). The update is still applied to the model's own weights, so the step is taken with
    the gradient at the other point (PAM's path-aware step); batch-norm statistics are those of that pass.
    """
    model = copy.deepcopy(model)
    g = seed_everything(cfg.seed)
    model.train()
    if teacher is not None:
        teacher.eval()

    def loss_fn(xb, yb):
        logits = model(xb) if weights_at is None else functional_call(model, weights_at(model), (xb,))
        loss = F.cross_entropy(logits, yb)
        if teacher is not None and alpha > 0:
            soft = F.softmax(teacher(xb).detach() / temperature, 1)
            loss = (1 - alpha) * loss + alpha * distillation_loss(logits, soft, temperature)
        if penalty is not None:
            loss = loss + penalty(model)
        return loss, logits

    fit(model.parameters(), loss_fn, x, y, cfg, progress=progress, desc=desc, generator=g, batch_hook=batch_hook)
    return model.eval()


@REPAIRERS.register("finetune", FinetuneConfig,
                    "Fine-tuning (the baseline): continue training the suspect on the clean budget.")
def finetune_repairer(model: nn.Module, budget, cfg: FinetuneConfig, *, progress: bool = True) -> tuple[nn.Module, dict]:
    """The repairer form of :func:`finetune`: the whole budget with ``cfg``'s recipe; info: the config."""
    return finetune(model, budget.x, budget.y, cfg.train_config(), progress=progress), {"config": cfg.to_dict()}
