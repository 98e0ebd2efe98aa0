"""Growing a reversed trigger towards the attacker's whole trigger (not in the paper): Neural Cleanse keeps the
smallest mask that fires, which can be part of the real trigger, and unlearning a part can leave the rest
working. :func:`complete_trigger` grows it by gradient steps on a capped logit margin, :func:`grow_trigger`
pixel by pixel."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from ...errors import BackdoorlabError
from ...device import model_device, to_device, to_host
from ...tensors import to_float
from .config import NeuralCleanseConfig
from .trigger import ReversedTrigger, _atanh_init, _frozen, _tanh_param, _target_gap, trigger_gaps, trigger_success


def complete_trigger(model: nn.Module, x: torch.Tensor, trigger: ReversedTrigger, cfg: NeuralCleanseConfig, *,
                     steps: int = 200, margin: float = 10.0, cost_factor: float = 1.0,
                     generator: torch.Generator | None = None) -> ReversedTrigger:
    """Grow a reversed trigger towards the strongest version of itself: ``steps`` Adam steps (``cfg.lr``, batches of
    ``cfg.batch_size`` clean images ``x``) from ``trigger``'s mask and pattern on
    ``-min(z_label - max_other z, margin) + lambda * |m|_1``, with ``lambda`` the reversal's final cost (at least
    ``cfg.init_cost``) times ``cost_factor``. Not in the paper.

    Neural Cleanse keeps the smallest mask that reaches its attack-success threshold, which can be part of the
    attacker's trigger (on an MNIST BadNets model: the right two columns of a 3x3 square). Asking for a large
    logit margin instead of a success rate rewards every pixel that makes the trigger fire harder, so the rest of
    the real trigger joins the mask, while pixels that weaken it (a larger white block fires a 3x3 backdoor *less*)
    stay out; the L1 term, at the strength the reversal ended with, keeps the mask from spreading over the image.
    ``model`` is left unchanged."""
    if steps < 0 or margin <= 0 or cost_factor < 0:
        raise BackdoorlabError(f"trigger completion needs steps >= 0, a margin > 0 and a cost factor >= 0, "
                               f"got {steps}, {margin}, {cost_factor}")
    if steps == 0:
        return trigger
    g = generator if generator is not None else torch.Generator().manual_seed(cfg.seed + 1000 * trigger.label + 17)
    xf = to_float(x)
    n = len(xf)
    bs = min(cfg.batch_size, n)
    device = model_device(model)
    mask_w = _atanh_init(trigger.mask.detach().float().clone()).to(device).requires_grad_(True)
    pattern_w = _atanh_init(trigger.pattern.detach().float().clone()).to(device).requires_grad_(True)
    opt = torch.optim.Adam([mask_w, pattern_w], lr=cfg.lr, betas=(0.5, 0.9))
    cost = max(trigger.final_cost, cfg.init_cost) * cost_factor
    with _frozen(model):
        for _ in range(steps):
            xb = to_device(xf[torch.randint(n, (bs,), generator=g)], device)
            m, p = _tanh_param(mask_w), _tanh_param(pattern_w)
            gap = _target_gap(model((1 - m) * xb + m * p), trigger.label)
            loss = -gap.clamp(max=margin).mean() + cost * m.abs().sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    mask, pattern = to_host(_tanh_param(mask_w).detach()), to_host(_tanh_param(pattern_w).detach())
    grown = ReversedTrigger(trigger.label, mask, pattern, float(mask.sum()), 0.0, trigger.converged, trigger.epochs,
                            trigger.final_cost)
    grown.attack_success = trigger_success(model, xf, grown)
    return grown
def grow_trigger(model: nn.Module, x: torch.Tensor, trigger: ReversedTrigger, *, min_gain: float = 0.5,
                 support: float = 0.5, max_pixels: int | None = None, max_images: int = 1000,
                 batch_size: int = 500, seed: int = 0) -> tuple[ReversedTrigger, list[dict]]:
    """Grow a reversed trigger pixel by pixel: among the pixels next to its support (mask > ``support``, 8-connected),
    stamp the one that raises the mean target logit margin (target logit minus the largest other, not capped) on
    the clean images ``x`` (uint8 or float (N, C, H, W); pass images of other labels) the most, at mask 1 in the
    trigger's own colour (its mask-weighted mean pattern); repeat while the best pixel adds at least ``min_gain``,
    up to ``max_pixels`` pixels (default: as many as the support holds). Returns the grown trigger and the pixels
    added (row, column, margin after). Not in the paper.

    Why: Neural Cleanse keeps the smallest mask that fires, and a backdoor trained on a patch usually fires from
    most subsets of it, so the reversed mask can be part of the attacker's patch, and unlearning that part leaves
    the whole patch partly working. The missing pixels raise the margin when stamped, but gradient steps from a
    mask of 0 do not find them (on an MNIST BadNets model the margin's gradient there points the other way, while
    stamping the pixel at full strength adds 1-2 logits); a discrete step does. Pixels that weaken the trigger
    (a white ring around a white patch) lower the margin and stay out, and only neighbours of the support are
    tried, so the mask cannot spread over the image. ``model`` is left unchanged; uses ``max_images`` images
    (a seeded draw) when ``x`` holds more."""
    if not (math.isfinite(min_gain) and min_gain > 0) or not 0 <= support < 1 or (max_pixels is not None
                                                                                 and max_pixels < 0):
        raise BackdoorlabError(f"trigger growth needs a minimum gain > 0, a support threshold in [0, 1) and "
                               f"max_pixels >= 0, got {min_gain}, {support}, {max_pixels}")
    xf = to_float(x)
    if len(xf) > max_images:
        xf = xf[torch.randperm(len(xf), generator=torch.Generator().manual_seed(seed))[:max_images]]
    m, p = trigger.mask.detach().float().clone(), trigger.pattern.detach().float().clone()
    if m.dim() == 2:
        m = m[None]
    sup = m[0] > support
    if not sup.any() or len(xf) == 0:
        return trigger, []
    colour = (p * m).sum((1, 2)) / m.sum()
    limit = int(sup.sum()) if max_pixels is None else max_pixels

    def stamped(mask, pattern) -> ReversedTrigger:
        return ReversedTrigger(trigger.label, mask.reshape(trigger.mask.shape), pattern, float(mask.sum()), 0.0,
                               trigger.converged, trigger.epochs, trigger.final_cost)

    def score(mask, pattern) -> float:
        return float(trigger_gaps(model, xf, stamped(mask, pattern), batch_size).mean())

    added = []
    base = score(m, p)
    while len(added) < limit:
        ring = F.max_pool2d(sup[None, None].float(), 3, 1, 1)[0, 0].bool() & ~sup
        best = None
        for i, j in ring.nonzero().tolist():
            m2, p2 = m.clone(), p.clone()
            m2[:, i, j] = 1.0
            p2[:, i, j] = colour
            g = score(m2, p2)
            if best is None or g > best[0]:
                best = (g, i, j, m2, p2)
        if best is None or best[0] - base < min_gain:
            break
        base, i, j, m, p = best
        sup[i, j] = True
        added.append({"row": i, "column": j, "margin": round(base, 4)})
    if not added:
        return trigger, []
    grown = stamped(m, p)
    grown.attack_success = trigger_success(model, xf, grown)
    return grown, added
