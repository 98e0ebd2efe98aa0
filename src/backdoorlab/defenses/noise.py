"""Gaussian weight noise: the random-perturbation baseline of Zhao et al. (ICLR 2020).

Zhao et al. compare the mode-connectivity sanitizer with models drawn at random around the suspect: each weight
tensor w gets i.i.d. Gaussian noise, w + sigma * std(w) * N(0, 1). If a backdoor were fragile to any weight
change, this would remove it as well as the path does; the paper shows it does not (clean accuracy goes before
the backdoor does).

Choosing sigma without the trigger: the relative noise scales of ``sigmas`` are tried from small to large, each
with ``draws`` seeded draws; the kept model is the draw with the best validation accuracy at the largest scale
whose best draw stays within ``max_accuracy_drop`` of the suspect's validation accuracy (the budget's validation
slice). Batch-norm running statistics are kept (re-estimating them on the budget is an option,
``reestimate_bn``).
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch
from torch import nn

from ..budget import CleanBudget
from ..curves import reestimate_bn
from ..config import Config
from ..device import to_device
from ..errors import BackdoorlabError
from ..metrics import accuracy, predict
from .repair import REPAIRERS
from .stopping import last_within_drop, split_validation


@dataclass
class NoiseConfig(Config):
    sigmas: tuple[float, ...] = (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5, 0.75, 1.0)
    draws: int = 3
    max_accuracy_drop: float = 0.02
    val_fraction: float = 0.1
    reestimate_bn: bool = False
    seed: int = 0

    def validate(self):
        self.sigmas = tuple(float(s) for s in self.sigmas)
        if not self.sigmas or any(s <= 0 for s in self.sigmas):
            raise BackdoorlabError(f"noise scales must be positive, got {list(self.sigmas)}")
        if self.draws < 1:
            raise BackdoorlabError(f"noise needs at least one draw per scale, got {self.draws}")


@torch.no_grad()
def add_weight_noise(model: nn.Module, sigma: float, generator: torch.Generator) -> nn.Module:
    """A copy of ``model`` with ``sigma * std(w) * N(0, 1)`` added to every parameter tensor w (biases and
    batch-norm affine parameters included; single-value tensors use |w| as their scale)."""
    noisy = copy.deepcopy(model).eval()
    for p in noisy.parameters():
        scale = p.std() if p.numel() > 1 else p.abs()
        p.add_(to_device(torch.randn(p.shape, generator=generator), p.device) * sigma * scale)  # drawn on the host
    return noisy


@REPAIRERS.register("noise", NoiseConfig,
                    "Gaussian weight noise (the baseline of Zhao et al. 2020): the largest noise scale that "
                    "keeps validation accuracy.")
def gaussian_noise(model: nn.Module, budget: CleanBudget, cfg: NoiseConfig | None = None, *,
                   progress: bool = True) -> tuple[nn.Module, dict]:
    """Return (noisy copy of ``model``, info with the chosen relative scale and the validation accuracies). The
    scale is chosen on the budget's validation slice (:mod:`.stopping`); the fit part serves only to re-estimate
    batch-norm statistics (``reestimate_bn``). All draws come from one generator seeded with ``cfg.seed``."""
    cfg = cfg or NoiseConfig()
    fit_part, val_part = split_validation(budget, cfg.val_fraction)
    base = accuracy(predict(model, val_part.x), val_part.y)
    g = torch.Generator().manual_seed(cfg.seed)
    best = {}  # position among the scales -> the best draw at that scale, for the last two (one of them is kept)

    def best_accuracy(step: tuple[int, float]) -> float:
        i, sigma = step
        best.pop(i - 2, None)
        best_acc = -1.0
        for _ in range(cfg.draws):
            noisy = add_weight_noise(model, sigma, g)
            if cfg.reestimate_bn:
                reestimate_bn(noisy, fit_part.x)
            acc = accuracy(predict(noisy, val_part.x), val_part.y)
            if acc > best_acc:
                best[i], best_acc = noisy, acc
        return best_acc

    kept, scored = last_within_drop(enumerate(sorted(cfg.sigmas)), best_accuracy, base, cfg.max_accuracy_drop)
    chosen, chosen_sigma = (copy.deepcopy(model).eval(), 0.0) if kept is None else (best[kept[0]], kept[1])
    info = {"sigma": chosen_sigma, "validation_accuracy": {"before": base},
            "trials": [{"sigma": sigma, "best_validation_accuracy": acc} for (_, sigma), acc in scored],
            "config": cfg.to_dict()}
    return chosen.eval(), info
