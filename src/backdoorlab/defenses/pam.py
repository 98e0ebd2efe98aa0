"""Path-Aware Minimization, PAM (Min, Qin, Zhang, Shen and Cheng, NeurIPS 2024, "Uncovering, Explaining, and
Mitigating the Superficial Safety of Backdoor Defense").

The paper's finding: most purification methods leave the purified model close to the suspect along the
*backdoor-connected path* (the straight line between the two in weight space, where the attack success rate
stays high well past the suspect), so fine-tuning it on a handful of poisoned images walks it back and the
backdoor returns (``backdoorlab retune``). PAM pushes the purified model further along that path: every step
takes the gradient of the unlearning loss at a point displaced towards the suspect,

    w  <-  w - lr * grad L(w + rho * (w_suspect - w) / ||w_suspect - w||),

so the loss is kept low, and the trigger unlearned, not only at ``w`` but on the part of the path that leads
back to the suspect. The displacement has length ``rho`` in weight space whatever the distance already
covered (zero at the first step, when ``w`` is the suspect); the norm runs over all the parameters together,
and batch-norm statistics are not displaced.

The loss is that of trigger unlearning: the authors' public code reverses the trigger with a generator network
(BTI-DBF) and stamps it on 20% of each clean batch under the true labels. Here the trigger is reversed with
Neural Cleanse on the clean budget, exactly as the ``nc-unlearning`` repairer does, and the fine-tuning recipe
is that repairer's (:class:`~backdoorlab.defenses.neural_cleanse.UnlearningConfig`, every option of which PAM
takes), so the two differ only by the path-aware step: ``rho=0`` is ``nc-unlearning``. ``rho`` defaults to the
authors' 0.5. Like every repairer here it knows nothing of the trigger; its one extra input is the suspect
itself, which it already holds.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from ..config import option
from .neural_cleanse.unlearning import UnlearningConfig, reverse_and_unlearn
from .repair import REPAIRERS


@dataclass
class PAMConfig(UnlearningConfig):
    """``rho``: length, in weight space, of the displacement towards the suspect at which each step's gradient is
    taken (0: plain Neural Cleanse unlearning). The rest is :class:`UnlearningConfig`: how the trigger is
    reversed and the unlearning recipe."""

    rho: float = option(0.5, check=(lambda v: isinstance(v, (int, float)) and math.isfinite(v) and v >= 0,
                                    "a finite number >= 0 (0: plain Neural Cleanse unlearning)"))


def global_norm(tensors) -> torch.Tensor:
    """The L2 norm of several tensors taken together, as one flat vector (a distance in weight space)."""
    return torch.linalg.vector_norm(torch.stack([torch.linalg.vector_norm(t) for t in tensors]))


class PathAwareWeights:
    """``weights_at`` for :func:`~backdoorlab.defenses.finetune.finetune`: the model's parameters displaced by
    ``rho`` towards ``reference`` (the suspect's parameters, by name). The displacement is computed without
    gradient; the returned tensors are ``parameter + displacement``, so the gradient of a loss taken there
    reaches the parameters unchanged. Records the distance to the reference at every call."""

    def __init__(self, reference: nn.Module, rho: float):
        self.reference = {n: p.detach().clone() for n, p in reference.named_parameters()}
        self.rho = rho
        self.distances: list[float] = []

    def __call__(self, model: nn.Module) -> dict[str, torch.Tensor]:
        params = dict(model.named_parameters())
        with torch.no_grad():
            diffs = {n: self.reference[n].to(p.device) - p for n, p in params.items()}
            norm = global_norm(diffs.values())
            self.distances.append(float(norm))
            scale = self.rho / (norm + 1e-12)
        return {n: p + diffs[n] * scale for n, p in params.items()}


@REPAIRERS.register("pam", PAMConfig,
                    "Path-Aware Minimization (Min et al. 2024): Neural Cleanse unlearning whose every step takes "
                    "the gradient at a point displaced towards the suspect, to move the repaired model further "
                    "along the backdoor-connected path, so that retuning does not bring the backdoor back.")
def pam(model: nn.Module, budget, cfg: PAMConfig | None = None, *, progress: bool = True,
        num_classes: int | None = None) -> tuple[nn.Module, dict]:
    """Return ``(repaired model, info)``: :func:`reverse_and_unlearn` with :class:`PathAwareWeights` on the
    suspect ``model``. info: that of ``nc-unlearning``, plus the distance in weight space from the suspect
    at the last step (how far the repair moved along and off the path)."""
    cfg = cfg or PAMConfig()
    weights_at = PathAwareWeights(model, cfg.rho) if cfg.rho > 0 else None
    repaired, info = reverse_and_unlearn(model, budget, cfg, progress=progress, num_classes=num_classes,
                                         weights_at=weights_at)
    reference = dict(model.named_parameters())
    with torch.no_grad():
        distance = global_norm(p - reference[n].to(p.device) for n, p in repaired.named_parameters())
    info["distance_from_suspect"] = round(float(distance), 4)
    return repaired, info
