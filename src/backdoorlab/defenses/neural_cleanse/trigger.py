"""A reversed trigger (mask and pattern) and how a model responds to it: the fraction of images it sends to
the trigger's label, and per image the target logit's margin. Also the shared pieces of every trigger
optimisation here: the tanh parametrisation that keeps mask and pattern in [0, 1], and running the model
frozen (eval mode, no parameter gradients)."""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch
from torch import nn

from ...device import model_device, to_device, to_host
from ...tensors import to_float


@dataclass
class ReversedTrigger:
    """The trigger reverse-engineered for one label: mask (1, H, W), pattern (C, H, W), both in [0, 1]."""

    label: int
    mask: torch.Tensor
    pattern: torch.Tensor
    l1: float  # sum of the mask
    attack_success: float  # on the clean images it was optimised on, with this mask and pattern
    converged: bool  # reached the attack-success threshold at least once
    epochs: int
    final_cost: float

    def apply(self, images: torch.Tensor, scale: torch.Tensor | None = None) -> torch.Tensor:
        """Stamp float images (N, C, H, W) in [0, 1]: ``(1 - m) * x + m * p``; with ``scale`` (N,), image i's
        mask is ``clip(scale[i] * m, 0, 1)``, a stronger version of the same trigger for ``scale`` > 1."""
        m, p = self.mask.to(images), self.pattern.to(images)
        if scale is not None:
            m = (scale.to(images).view(-1, 1, 1, 1) * m).clamp(0, 1)
        return (1 - m) * images + m * p
def _tanh_param(x: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    return torch.tanh(x) / (2 - eps) + 0.5


def _atanh_init(v: torch.Tensor, eps: float = 1e-7) -> torch.Tensor:
    return torch.atanh(((v - 0.5) * (2 - eps)).clamp(-1 + 1e-6, 1 - 1e-6))


@contextlib.contextmanager
def _frozen(model: nn.Module):
    """Run ``model`` in eval mode with no parameter gradients inside the block; restore both on exit."""
    requires = [p.requires_grad for p in model.parameters()]
    was_training = model.training
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    try:
        yield model
    finally:
        for p, r in zip(model.parameters(), requires):
            p.requires_grad_(r)
        model.train(was_training)
def trigger_success(model: nn.Module, x: torch.Tensor, trigger: ReversedTrigger, batch_size: int = 500) -> float:
    """Fraction of the images ``x`` (uint8 or float (N, C, H, W)) that ``model`` (in eval mode, left unchanged)
    sends to ``trigger.label`` once ``trigger`` is stamped on them."""
    xf, device = to_float(x), model_device(model)
    with torch.no_grad(), _frozen(model):
        pred = torch.cat([to_host(model(trigger.apply(to_device(xf[i:i + batch_size], device))).argmax(1))
                          for i in range(0, len(xf), batch_size)])
    return float((pred == trigger.label).float().mean())


def trigger_gaps(model: nn.Module, x: torch.Tensor, trigger: ReversedTrigger, batch_size: int = 500) -> torch.Tensor:
    """Per image of ``x`` (uint8 or float (N, C, H, W)) stamped with ``trigger``: ``model``'s (in eval mode, left
    unchanged) ``trigger.label`` logit minus its largest other logit, (N,)."""
    xf, device = to_float(x), model_device(model)
    with torch.no_grad(), _frozen(model):
        return torch.cat([to_host(_target_gap(model(trigger.apply(to_device(xb, device))), trigger.label))
                          for xb in xf.split(batch_size)])

def _target_gap(logits: torch.Tensor, label: int) -> torch.Tensor:
    """Per row: the ``label`` logit minus the largest other one."""
    others = logits.clone()
    others[:, label] = -torch.inf
    return logits[:, label] - others.max(1).values
