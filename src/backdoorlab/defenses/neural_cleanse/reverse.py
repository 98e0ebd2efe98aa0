"""Reverse-engineering one label's trigger: the smallest mask and its pattern that send clean images to the
label, found with Adam under the paper's adaptive L1 weight (see the package docstring)."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...device import model_device, to_device, to_host
from ...tensors import to_float
from .config import NeuralCleanseConfig
from .trigger import ReversedTrigger, _atanh_init, _frozen, _tanh_param, trigger_success


def reverse_trigger(model: nn.Module, x: torch.Tensor, label: int, cfg: NeuralCleanseConfig, *,
                    generator: torch.Generator | None = None, progress_bar=None) -> ReversedTrigger:
    """Reverse-engineer the minimal trigger sending the clean images ``x`` (uint8 or float, (N, C, H, W)) to
    ``label`` with the adaptive-lambda schedule of the paper; ``model`` is run in eval mode and left unchanged
    (its mode and ``requires_grad`` flags are restored). The mask and pattern are optimised on the model's device
    (drawn on the host, as on a CPU run); the trigger returned holds them on the host."""
    g = generator if generator is not None else torch.Generator().manual_seed(cfg.seed + 1000 * label)
    xf = to_float(x)
    n, c, h, w = xf.shape
    bs = min(cfg.batch_size, n)
    per_epoch = cfg.batches_per_epoch or max(1, math.ceil(n / bs))
    # random init in [0, 1], as the authors' code
    device = model_device(model)
    mask_w = _atanh_init(torch.rand(1, h, w, generator=g)).to(device).requires_grad_(True)
    pattern_w = _atanh_init(torch.rand(c, h, w, generator=g)).to(device).requires_grad_(True)
    opt = torch.optim.Adam([mask_w, pattern_w], lr=cfg.lr, betas=(0.5, 0.9))
    target = torch.full((bs,), int(label), dtype=torch.long, device=device)
    cost = cfg.init_cost
    up_count = down_count = set_count = stop_count = 0
    went_up = went_down = False
    best_l1, best_mask, best_pattern = math.inf, None, None
    stop_best = math.inf
    epoch = 0
    with _frozen(model):
        perm, pos = torch.randperm(n, generator=g), 0
        for epoch in range(1, cfg.epochs + 1):
            correct = seen = 0
            reg_sum = 0.0
            for _ in range(per_epoch):
                if pos + bs > n:
                    perm, pos = torch.randperm(n, generator=g), 0
                xb = to_device(xf[perm[pos:pos + bs]], device)
                pos += bs
                m, p = _tanh_param(mask_w), _tanh_param(pattern_w)
                logits = model((1 - m) * xb + m * p)
                reg = m.abs().sum()
                loss = F.cross_entropy(logits, target[:len(xb)]) + cost * reg
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                correct += (logits.argmax(1) == label).sum().item()
                seen += len(xb)
                reg_sum += reg.item()
            acc, l1 = correct / seen, reg_sum / per_epoch
            if acc >= cfg.attack_success_threshold and l1 < best_l1:
                best_l1 = l1
                best_mask, best_pattern = _tanh_param(mask_w).detach().clone(), _tanh_param(pattern_w).detach().clone()
            # the paper's adaptive lambda
            if cost == 0 and acc >= cfg.attack_success_threshold:
                set_count += 1
                if set_count >= cfg.patience:
                    cost, up_count, down_count, went_up, went_down = cfg.init_cost, 0, 0, False, False
            else:
                set_count = 0
            if acc >= cfg.attack_success_threshold:
                up_count, down_count = up_count + 1, 0
            else:
                up_count, down_count = 0, down_count + 1
            if up_count >= cfg.patience:
                up_count, cost, went_up = 0, cost * cfg.cost_multiplier, True
            elif down_count >= cfg.patience:
                down_count, cost, went_down = 0, cost / cfg.cost_multiplier ** 1.5, True
            if progress_bar is not None:
                progress_bar.update(1)
                progress_bar.set_postfix(label=label, asr=f"{acc:.2f}", l1=f"{l1:.1f}", best=f"{best_l1:.1f}")
            if cfg.early_stop_patience:
                if best_l1 < math.inf:
                    stop_count = stop_count + 1 if best_l1 >= 0.99 * stop_best else 0
                stop_best = min(stop_best, best_l1)
                if went_up and went_down and stop_count >= cfg.early_stop_patience:
                    break
    if progress_bar is not None and epoch < cfg.epochs:
        progress_bar.update(cfg.epochs - epoch)
    converged = best_mask is not None
    if not converged:
        best_mask, best_pattern = _tanh_param(mask_w).detach(), _tanh_param(pattern_w).detach()
    # the reported norm and success are those of the kept mask, measured on all the images
    best_mask, best_pattern = to_host(best_mask), to_host(best_pattern)
    trigger = ReversedTrigger(int(label), best_mask, best_pattern, float(best_mask.sum()), 0.0, converged, epoch,
                              float(cost))
    trigger.attack_success = trigger_success(model, xf, trigger)
    return trigger
