"""Implicit backdoor adversarial unlearning, I-BAU (Zeng, Chen, Park, Mao, Jin and Jia, ICLR 2022).

Threat model: the defender holds the suspect model and a small clean set and knows nothing of the trigger. The
paper poses backdoor removal as a minimax problem over one *universal* additive perturbation delta,

    min_theta  max_{||delta|| <= C}  (1/n) sum_i  L(f_theta(x_i + delta), y_i),

on the premise that a trigger is an input change that moves many clean images to one label, so the strongest
universal perturbation the clean set admits points at the backdoor, and training the model to ignore it
unlearns the trigger. Each round:

1. **Find delta.** Starting from zero, one pass over the budget in batches: gradient ascent (SGD, lr
   ``delta_lr``) on the cross-entropy of ``f(x + delta)`` against the model's own predictions, with an L2 penalty
   ``delta_l2 * ||delta||^2`` keeping it small.
2. **Unlearn it.** One pass over the budget: each batch adds delta to a fraction ``portion`` of its images and
   takes an Adam step (lr ``lr``) on the cross-entropy with the true labels. The step's gradient is the
   *implicit hypergradient*: the direct gradient plus the term through delta's dependence on theta, with delta
   seen as the fixed point of the inner map ``delta - inner_lr * grad_delta H(delta, theta)`` and the inverse
   Jacobian approximated by ``K`` fixed-point iterations (vector-Jacobian products, no matrix is formed).

The model stays in eval mode throughout (batch-norm statistics frozen, dropout off), as in the paper's code.
Defaults are the paper's code's: 5 rounds, K = 5, batch 100, Adam lr 0.001, delta's SGD lr 10 with penalty
0.001, inner-map lr 0.1, the perturbation on 1% of each batch (at least one image). The inner objective of the
hypergradient is scored on the current batch (the paper's code scores it on the budget's first batch).
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..budget import CleanBudget
from ..config import Config
from ..device import model_device, to_device
from ..errors import BackdoorlabError
from ..tensors import to_float
from ..train import seed_everything
from .repair import REPAIRERS


@dataclass
class IBAUConfig(Config):
    rounds: int = 5  # alternations of "find delta" and "unlearn delta"
    K: int = 5  # fixed-point iterations of the implicit hypergradient (0: the direct gradient only)
    batch_size: int = 100
    lr: float = 0.001  # Adam on the model's weights
    delta_lr: float = 10.0  # SGD ascent on the universal perturbation
    delta_l2: float = 0.001  # weight of ||delta||^2 in delta's objective
    inner_lr: float = 0.1  # step of the inner map whose fixed point delta is taken to be
    portion: float = 0.01  # fraction of each batch that carries delta in the unlearning step
    max_norm: float = 0.0  # > 0: project delta onto the L2 ball of this radius (pixel units); 0: no ball
    seed: int = 0

    def validate(self):
        for name in ("rounds", "batch_size"):
            if int(getattr(self, name)) < 1:
                raise BackdoorlabError(f"I-BAU's {name} must be >= 1, got {getattr(self, name)}")
        if self.K < 0:
            raise BackdoorlabError(f"I-BAU's K must be >= 0, got {self.K}")
        for name in ("lr", "delta_lr", "inner_lr"):
            v = getattr(self, name)
            if not (v > 0 and math.isfinite(v)):
                raise BackdoorlabError(f"I-BAU's {name} must be a finite number > 0, got {v}")
        if not (self.delta_l2 >= 0 and math.isfinite(self.delta_l2)):
            raise BackdoorlabError(f"I-BAU's delta_l2 must be a finite number >= 0, got {self.delta_l2}")
        if not (self.max_norm >= 0 and math.isfinite(self.max_norm)):
            raise BackdoorlabError(f"I-BAU's max_norm must be a finite number >= 0 (0: no ball), got {self.max_norm}")
        if not 0 < self.portion <= 1:
            raise BackdoorlabError(f"I-BAU's portion must be in (0, 1], got {self.portion}")


def universal_perturbation(model: nn.Module, batches, cfg: IBAUConfig) -> torch.Tensor:
    """Step 1 of a round: one ascent pass over ``batches`` (float images, labels) from delta = 0, then (with
    ``max_norm``) the projection onto the L2 ball; returns delta (1, C, H, W), detached."""
    delta = torch.zeros_like(batches[0][0][:1], requires_grad=True)
    opt = torch.optim.SGD([delta], lr=cfg.delta_lr)
    for xb, _ in batches:
        with torch.no_grad():
            own = model(xb).argmax(1)
        loss = -F.cross_entropy(model(xb + delta), own) + cfg.delta_l2 * delta.pow(2).sum()
        (delta.grad,) = torch.autograd.grad(loss, delta)  # the weights' .grad stay untouched
        opt.step()
    delta = delta.detach()
    if cfg.max_norm > 0:  # the ball ||delta|| <= C of the paper's minimax problem
        delta = delta * min(1.0, cfg.max_norm / max(float(delta.norm()), 1e-12))
    return delta


def hypergradient(model: nn.Module, params: list, delta: torch.Tensor, xb: torch.Tensor, yb: torch.Tensor,
                  rows: torch.Tensor, cfg: IBAUConfig) -> tuple[list, float]:
    """The implicit hypergradient of the unlearning loss with respect to ``params`` at ``delta`` (step 2 of a
    round, for one batch; ``rows`` are the images that carry delta). Returns (gradients, outer loss)."""
    d = delta.detach().requires_grad_(True)
    patch = torch.zeros_like(xb)
    patch[rows] = 1.0
    outer = F.cross_entropy(model(xb + patch * d), yb)
    g_d, *g_theta = torch.autograd.grad(outer, [d, *params], allow_unused=True)
    g_theta = [torch.zeros_like(p) if g is None else g for p, g in zip(params, g_theta)]
    if cfg.K == 0:
        return g_theta, outer.item()
    # the inner map: one gradient step on delta's objective, here with the true labels (H in the paper)
    inner = -F.cross_entropy(model(xb + d), yb) + cfg.delta_l2 * d.pow(2).sum()
    (g_inner,) = torch.autograd.grad(inner, d, create_graph=True)
    mapped = d - cfg.inner_lr * g_inner
    v = torch.zeros_like(d)
    for _ in range(cfg.K):  # v <- (d map / d delta)^T v + d outer / d delta
        (jv,) = torch.autograd.grad(mapped, d, grad_outputs=v, retain_graph=True)
        v = jv + g_d
    indirect = torch.autograd.grad(mapped, params, grad_outputs=v, allow_unused=True)
    return [g + (0 if i is None else i.detach()) for g, i in zip(g_theta, indirect)], outer.item()


@REPAIRERS.register("i-bau", IBAUConfig,
                    "I-BAU (Zeng et al. 2022): unlearn the strongest universal perturbation of the clean "
                    "budget, round after round.")
def ibau(model: nn.Module, budget: CleanBudget, cfg: IBAUConfig | None = None, *,
         progress: bool = True) -> tuple[nn.Module, dict]:
    """Return (I-BAU-unlearned copy of ``model``, info with each round's perturbation norm and loss) using the
    clean ``budget`` only."""
    cfg = cfg or IBAUConfig()
    if len(budget) < 1:
        raise BackdoorlabError("I-BAU needs a clean budget of at least one image")
    g = seed_everything(cfg.seed)
    work = copy.deepcopy(model).eval()
    params = [p for p in work.parameters() if p.requires_grad]
    opt = torch.optim.Adam(params, lr=cfg.lr)
    x, y = budget.x, budget.y.long()
    device = model_device(work)  # the budget's batches are reused every round: moved to the model's device once
    batches = [(to_device(to_float(x[i:i + cfg.batch_size]), device), to_device(y[i:i + cfg.batch_size], device))
               for i in range(0, len(x), cfg.batch_size)]
    rounds = []
    bar = tqdm(total=cfg.rounds * len(batches), desc="i-bau", disable=not progress, leave=False, dynamic_ncols=True)
    for _ in range(cfg.rounds):
        delta = universal_perturbation(work, batches, cfg)
        norm = round(float(delta.norm()), 4)
        losses = []
        for xb, yb in batches:
            n = max(1, int(len(xb) * cfg.portion))
            rows = torch.randperm(len(xb), generator=g)[:n]
            grads, loss = hypergradient(work, params, delta, xb, yb, rows, cfg)
            for p, gr in zip(params, grads):
                p.grad = gr.detach()
            opt.step()
            opt.zero_grad(set_to_none=True)
            losses.append(loss)
            bar.update()
            bar.set_postfix(loss=f"{loss:.3f}", delta=f"{norm:.2f}")
        rounds.append({"delta_l2_norm": norm,
                       "mean_unlearning_loss": round(sum(losses) / len(losses), 4)})
    bar.close()
    return work.eval(), {"rounds": rounds, "config": cfg.to_dict()}
