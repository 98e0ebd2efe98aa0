"""Feature shift tuning, FST (Min, Qin, Shen and Cheng, NeurIPS 2023).

Threat model: the defender holds the suspect model and a small clean set and knows nothing of the trigger (the
same as fine-tuning). The paper's observation: plain fine-tuning keeps the backdoor because the clean features
it learns stay entangled with the backdoor features the old classifier reads. FST re-initialises the final
linear layer and fine-tunes the whole model with an extra term that pushes the new classifier's weights away
from the suspect's,

    loss = CE(f(x), y) + alpha * <W, W_suspect>,      ||W|| held at ||W_suspect||,

so the features must shift to serve a classifier unlike the old one. The norm constraint keeps the penalty from
being met by shrinking W. Here the constraint is a parametrisation (W = V * ||W_suspect|| / ||V||, optimised
through V) rather than a projection after every step; at the end the constrained weight is written back and
the model is a plain model of the suspect's architecture.

Defaults: alpha 0.2 and a re-initialised classifier (the paper's code), with the fine-tuning recipe of
:class:`FinetuneConfig` (1,000 steps, peak lr 0.01), so FST and plain fine-tuning differ only by the new head and
the penalty.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize

from ..budget import CleanBudget
from ..errors import BackdoorlabError
from .finetune import FinetuneConfig, finetune
from .repair import REPAIRERS


@dataclass
class FSTConfig(FinetuneConfig):
    """``alpha``: weight of the inner-product penalty between the new and the suspect's classifier weights;
    ``reinit``: re-initialise the classifier first (the paper does). The recipe fields are fine-tuning's."""

    alpha: float = 0.2
    reinit: bool = True

    def validate(self):
        if self.alpha < 0 or not math.isfinite(self.alpha):
            raise BackdoorlabError(f"FST's alpha must be a finite number >= 0, got {self.alpha}")
        super().validate()


class _FixedNorm(nn.Module):
    """Parametrisation W = V * norm / ||V||: the weight keeps the Frobenius norm ``norm``."""

    def __init__(self, norm: float):
        super().__init__()
        self.norm = float(norm)

    def forward(self, v: torch.Tensor) -> torch.Tensor:
        return v * (self.norm / v.norm().clamp_min(1e-12))


def classifier_layer(model: nn.Module) -> nn.Linear:
    """The model's final linear layer (``model.fc``, as every registry architecture has)."""
    fc = getattr(model, "fc", None)
    if not isinstance(fc, nn.Linear):
        raise BackdoorlabError(f"FST needs the model's final linear layer as `fc` (the registry's architectures); "
                               f"{type(model).__name__} has none")
    return fc


@REPAIRERS.register("fst", FSTConfig,
                    "Feature shift tuning (Min et al. 2023): a new classifier pushed away from the suspect's, "
                    "and the features fine-tuned to serve it.", learns_features=True)
def feature_shift_tuning(model: nn.Module, budget: CleanBudget, cfg: FSTConfig | None = None, *,
                         progress: bool = True) -> tuple[nn.Module, dict]:
    """Return (FST-tuned copy of ``model``, info) using the clean ``budget`` only."""
    cfg = cfg or FSTConfig()
    work = copy.deepcopy(model).eval()
    fc = classifier_layer(work)
    w_suspect = fc.weight.detach().clone()
    norm = float(w_suspect.norm())
    with torch.no_grad():
        if cfg.reinit:  # PyTorch's default Linear init range, from the run's seed
            g = torch.Generator().manual_seed(cfg.seed)
            bound = 1 / math.sqrt(fc.in_features)
            fc.weight.copy_(torch.rand(fc.weight.shape, generator=g) * 2 * bound - bound)
            if fc.bias is not None:
                fc.bias.copy_(torch.rand(fc.bias.shape, generator=g) * 2 * bound - bound)
    parametrize.register_parametrization(fc, "weight", _FixedNorm(norm))

    def penalty(m: nn.Module) -> torch.Tensor:
        return cfg.alpha * (classifier_layer(m).weight * w_suspect).sum()

    tuned = finetune(work, budget.x, budget.y, cfg.train_config(), progress=progress, desc="fst",
                     penalty=penalty if cfg.alpha > 0 else None)
    tuned_fc = classifier_layer(tuned)
    parametrize.remove_parametrizations(tuned_fc, "weight", leave_parametrized=True)
    w = tuned_fc.weight.detach()
    cosine = float(F.cosine_similarity(w.flatten(), w_suspect.flatten(), dim=0))
    return tuned.eval(), {"classifier_cosine_to_suspect": round(cosine, 4), "classifier_norm": round(norm, 4),
                          "config": cfg.to_dict()}
