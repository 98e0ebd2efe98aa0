"""Neural Cleanse (Wang et al., "Neural Cleanse: Identifying and Mitigating Backdoor Attacks in Neural
Networks", IEEE S&P 2019): a model-level detector and its unlearning repairer.

Detection. For every label ``c`` reverse-engineer the smallest trigger that sends clean images to ``c``: a mask
``m`` in [0, 1]^(H x W) and a pattern ``p`` in [0, 1]^(C x H x W), stamped as ``x' = (1 - m) * x + m * p``, found by
minimising ``CE(f(x'), c) + lambda * |m|_1`` on the clean budget with Adam. Both are parametrised through tanh
(``m = tanh(w) / (2 - eps) + 1/2``), as in the authors' code. ``lambda`` follows the paper's adaptive schedule:
it starts at ``init_cost``; after ``patience`` epochs in a row with the attack success rate (on the clean
budget) at or above ``attack_success_threshold`` it is multiplied by ``cost_multiplier``, after ``patience``
epochs below it is divided by ``cost_multiplier ** 1.5``. The kept trigger is the one with the smallest L1
norm among those reaching the threshold (the last one if none did; ``converged`` says which). A backdoor
target needs a much smaller trigger than the other labels: with the mask norms ``L1_c``, the anomaly index of
label ``c`` is ``|L1_c - median| / (1.4826 * MAD)``, counted only for labels below the median. The model is
flagged when the smallest label's index exceeds ``anomaly_threshold`` (2, the paper's), and that label is the
suspected target. Detection never sees the true trigger.

Budget. The authors' defaults (``PAPER_DEFAULTS``) run 1,000 epochs (early-stopped) over 1,000 images in
batches of 32 per label: hours on a CPU. Ours (``NeuralCleanseConfig()``) define an *epoch* as
``batches_per_epoch`` mini-batches (default 5 batches of 64 images) and run ``epochs`` (default 40) of them per
label, 200 Adam steps, with the same schedule and a patience of 3 of these short epochs (paper: 5 full passes),
early stop after 15: about a minute for MNIST ``small-cnn`` and 10 labels on one CPU thread. On our MNIST models
the anomaly indices this gives are within a few tenths of those of 20 epochs of 10 batches with patience 5.

Repair (:func:`neural_cleanse_unlearn`). Fine-tune on the clean budget where a fixed ``fraction`` (paper: 20%) of
the images carry the reversed trigger of the flagged label(s) and keep their true labels.
"""

from __future__ import annotations

import contextlib
import math
import pathlib
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..config import Config
from ..errors import BackdoorlabError
from ..io import atomic_path
from ..tensors import to_float
from ..train import TrainConfig
from .detectors import DETECTORS
from .finetune import FinetuneConfig, finetune
from .repair import REPAIRERS

MAD_CONSISTENCY = 1.4826  # makes the MAD a consistent estimator of the standard deviation for normal data

# The authors' settings (bolunwang/backdoor, gtsrb_visualize_example.py / visualizer.py), for reference.
PAPER_DEFAULTS = dict(epochs=1000, batch_size=32, batches_per_epoch=None, lr=0.1, init_cost=1e-3,
                      cost_multiplier=1.5, patience=5, attack_success_threshold=0.99, early_stop_patience=25,
                      anomaly_threshold=2.0)


@dataclass
class NeuralCleanseConfig(Config):
    """Hyperparameters of Neural Cleanse's trigger reverse engineering (see the module docstring).

    ``epochs``: optimisation epochs per label (paper: 1,000, early-stopped). ``batches_per_epoch``: mini-batches
    per epoch; None = one pass over the clean images (paper). ``batch_size``: images per mini-batch (paper: 32).
    ``lr``: Adam learning rate, betas (0.5, 0.9) as in the paper. ``init_cost``: initial lambda (paper 1e-3).
    ``cost_multiplier``: lambda is multiplied by it after ``patience`` epochs at or above
    ``attack_success_threshold`` and divided by its 1.5th power after ``patience`` epochs below (paper 1.5, 5,
    0.99; ours: 3 of our shorter epochs). ``early_stop_patience``: stop after this many epochs without a 1%
    smaller best norm, once lambda has gone both up and down (paper: 5 * patience); 0 disables it. ``anomaly_threshold``: flag above this
    anomaly index (paper 2). ``labels``: restrict the search to these labels (default all).
    """

    epochs: int = 40
    batch_size: int = 64
    batches_per_epoch: int | None = 5
    lr: float = 0.1
    init_cost: float = 1e-3
    cost_multiplier: float = 1.5
    patience: int = 3
    attack_success_threshold: float = 0.99
    early_stop_patience: int = 15
    anomaly_threshold: float = 2.0
    labels: list[int] | None = None
    seed: int = 0

    def validate(self):
        if self.epochs < 1 or self.batch_size < 1 or (self.batches_per_epoch is not None and self.batches_per_epoch < 1):
            raise BackdoorlabError("Neural Cleanse needs epochs, batch size and batches per epoch >= 1")
        if self.lr <= 0 or self.init_cost < 0 or self.cost_multiplier <= 1 or self.patience < 1:
            raise BackdoorlabError("Neural Cleanse needs lr > 0, init cost >= 0, cost multiplier > 1, patience >= 1")
        if not 0 < self.attack_success_threshold <= 1:
            raise BackdoorlabError(f"attack success threshold must lie in (0, 1], got {self.attack_success_threshold}")
        if self.anomaly_threshold <= 0:
            raise BackdoorlabError(f"anomaly threshold must be > 0, got {self.anomaly_threshold}")


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


def anomaly_indices(norms) -> np.ndarray:
    """``|L1_c - median| / (1.4826 * MAD)`` for every label (the paper's anomaly index; a MAD of 0 gives inf
    for labels off the median, 0 on it)."""
    norms = np.asarray(norms, dtype=np.float64)
    med = np.median(norms)
    dev = np.abs(norms - med)
    mad = MAD_CONSISTENCY * np.median(dev)
    if mad == 0:
        return np.where(dev > 0, np.inf, 0.0)
    return dev / mad


@dataclass
class NeuralCleanseResult:
    """What :func:`neural_cleanse` found. ``triggers[i]`` is the trigger of ``labels[i]``."""

    labels: list[int]
    triggers: list[ReversedTrigger]
    l1_norms: list[float]
    anomaly_indices: list[float]  # per label; labels above the median get 0 (only small triggers are suspicious)
    anomaly_index: float  # of the label with the smallest mask
    backdoored: bool
    suspected_target: int | None
    flagged_labels: list[int]  # every label below the median with an index above the threshold
    threshold: float
    seconds: float
    config: dict = field(default_factory=dict)

    def trigger_for(self, label: int) -> ReversedTrigger:
        for t in self.triggers:
            if t.label == label:
                return t
        raise BackdoorlabError(f"no reversed trigger for label {label}; have {self.labels}")

    def labels_to_unlearn(self) -> list[int]:
        """The flagged labels, or the label with the smallest mask when none is flagged (a defender who repairs
        anyway)."""
        return self.flagged_labels or [self.labels[int(np.argmin(self.l1_norms))]]

    def to_dict(self) -> dict:
        """JSON-able summary (no tensors)."""
        return {"backdoored": self.backdoored, "suspected_target": self.suspected_target,
                "anomaly_index": _finite(self.anomaly_index), "threshold": self.threshold,
                "flagged_labels": self.flagged_labels, "labels": self.labels,
                "l1_norms": [round(v, 4) for v in self.l1_norms],
                "anomaly_indices": [_finite(v) for v in self.anomaly_indices],
                "attack_success": [round(t.attack_success, 4) for t in self.triggers],
                "converged": [t.converged for t in self.triggers], "epochs_run": [t.epochs for t in self.triggers],
                "seconds": round(self.seconds, 2), "config": self.config}

    def save_images(self, out_dir, examples: torch.Tensor | None = None, scale: int = 4) -> dict[str, str]:
        """Write PNGs to ``out_dir``: per label the mask, the pattern, ``mask * pattern`` and (with float or
        uint8 ``examples`` (N, C, H, W)) up to 8 stamped examples in a row; return {name: file name}."""
        out = pathlib.Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        files = {}
        ex = to_float(examples[:8]) if examples is not None and len(examples) else None
        for t in self.triggers:
            images = {"mask": t.mask, "pattern": t.pattern, "trigger": t.mask * t.pattern}
            if ex is not None:
                images["examples"] = torch.cat(list(t.apply(ex)), dim=-1)
            for kind, img in images.items():
                name = f"label{t.label}_{kind}.png"
                save_png(img, out / name, scale)
                files[f"{kind}_{t.label}"] = name
        return files


def _finite(v: float, cap: float = 1e6) -> float:
    return round(float(min(v, cap)), 4) if math.isfinite(v) or v > 0 else 0.0


def save_png(image: torch.Tensor, path, scale: int = 4) -> None:
    """Write a (C, H, W) or (H, W) float image in [0, 1] (C = 1 or 3) as a PNG, upscaled ``scale`` times
    (nearest neighbour), atomically."""
    from PIL import Image

    img = image.detach().float().clamp(0, 1).cpu()
    if img.dim() == 3 and img.shape[0] == 1:
        img = img[0]
    arr = (img.numpy() * 255).round().astype(np.uint8)
    if arr.ndim == 3:
        arr = arr[:3].transpose(1, 2, 0) if arr.shape[0] >= 3 else arr[0]
    im = Image.fromarray(arr)
    if scale > 1:
        im = im.resize((im.width * scale, im.height * scale), Image.NEAREST)
    with atomic_path(path) as tmp:
        im.save(tmp, format="PNG")


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


def reverse_trigger(model: nn.Module, x: torch.Tensor, label: int, cfg: NeuralCleanseConfig, *,
                    generator: torch.Generator | None = None, progress_bar=None) -> ReversedTrigger:
    """Reverse-engineer the minimal trigger sending the clean images ``x`` (uint8 or float, (N, C, H, W)) to
    ``label`` with the adaptive-lambda schedule of the paper; ``model`` is run in eval mode and left unchanged
    (its mode and ``requires_grad`` flags are restored)."""
    g = generator if generator is not None else torch.Generator().manual_seed(cfg.seed + 1000 * label)
    xf = to_float(x)
    n, c, h, w = xf.shape
    bs = min(cfg.batch_size, n)
    per_epoch = cfg.batches_per_epoch or max(1, math.ceil(n / bs))
    # random init in [0, 1], as the authors' code
    mask_w = _atanh_init(torch.rand(1, h, w, generator=g)).requires_grad_(True)
    pattern_w = _atanh_init(torch.rand(c, h, w, generator=g)).requires_grad_(True)
    opt = torch.optim.Adam([mask_w, pattern_w], lr=cfg.lr, betas=(0.5, 0.9))
    target = torch.full((bs,), int(label), dtype=torch.long)
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
                xb = xf[perm[pos:pos + bs]]
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
    trigger = ReversedTrigger(int(label), best_mask, best_pattern, float(best_mask.sum()), 0.0, converged, epoch,
                              float(cost))
    trigger.attack_success = trigger_success(model, xf, trigger)
    return trigger


def trigger_success(model: nn.Module, x: torch.Tensor, trigger: ReversedTrigger, batch_size: int = 500) -> float:
    """Fraction of the images ``x`` (uint8 or float (N, C, H, W)) that ``model`` (in eval mode, left unchanged)
    sends to ``trigger.label`` once ``trigger`` is stamped on them."""
    xf = to_float(x)
    with torch.no_grad(), _frozen(model):
        pred = torch.cat([model(trigger.apply(xf[i:i + batch_size])).argmax(1) for i in range(0, len(xf), batch_size)])
    return float((pred == trigger.label).float().mean())


def trigger_gaps(model: nn.Module, x: torch.Tensor, trigger: ReversedTrigger, batch_size: int = 500) -> torch.Tensor:
    """Per image of ``x`` (uint8 or float (N, C, H, W)) stamped with ``trigger``: ``model``'s (in eval mode, left
    unchanged) ``trigger.label`` logit minus its largest other logit, (N,)."""
    xf = to_float(x)
    with torch.no_grad(), _frozen(model):
        return torch.cat([_target_gap(model(trigger.apply(xb)), trigger.label) for xb in xf.split(batch_size)])


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
    mask_w = _atanh_init(trigger.mask.detach().float().clone()).requires_grad_(True)
    pattern_w = _atanh_init(trigger.pattern.detach().float().clone()).requires_grad_(True)
    opt = torch.optim.Adam([mask_w, pattern_w], lr=cfg.lr, betas=(0.5, 0.9))
    cost = max(trigger.final_cost, cfg.init_cost) * cost_factor
    with _frozen(model):
        for _ in range(steps):
            xb = xf[torch.randint(n, (bs,), generator=g)]
            m, p = _tanh_param(mask_w), _tanh_param(pattern_w)
            gap = _target_gap(model((1 - m) * xb + m * p), trigger.label)
            loss = -gap.clamp(max=margin).mean() + cost * m.abs().sum()
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
    mask, pattern = _tanh_param(mask_w).detach(), _tanh_param(pattern_w).detach()
    grown = ReversedTrigger(trigger.label, mask, pattern, float(mask.sum()), 0.0, trigger.converged, trigger.epochs,
                            trigger.final_cost)
    grown.attack_success = trigger_success(model, xf, grown)
    return grown


def _target_gap(logits: torch.Tensor, label: int) -> torch.Tensor:
    """Per row: the ``label`` logit minus the largest other one."""
    others = logits.clone()
    others[:, label] = -torch.inf
    return logits[:, label] - others.max(1).values


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


@DETECTORS.register("neural-cleanse", NeuralCleanseConfig,
                    "Neural Cleanse (Wang et al. 2019): reverse-engineer the smallest trigger per label; a label "
                    "whose trigger is an outlier is the backdoor's target.", level="model")
def neural_cleanse(model: nn.Module, x: torch.Tensor, num_classes: int, cfg: NeuralCleanseConfig | None = None,
                   *, progress: bool = True) -> NeuralCleanseResult:
    """Run Neural Cleanse on ``model`` with clean images ``x`` (uint8 or float (N, C, H, W)).

    Returns the reversed trigger of every label, the mask L1 norms, the anomaly indices and the verdict."""
    cfg = cfg or NeuralCleanseConfig()
    if x.dim() != 4 or len(x) < 2:
        raise BackdoorlabError(f"Neural Cleanse needs clean images (N, C, H, W) with N >= 2, got {tuple(x.shape)}")
    labels = list(range(num_classes)) if cfg.labels is None else [int(v) for v in cfg.labels]
    bad = [v for v in labels if not 0 <= v < num_classes]
    if bad or len(labels) < 3:
        raise BackdoorlabError(f"Neural Cleanse needs at least 3 labels in 0..{num_classes - 1}, got {labels}")
    was_training = model.training
    model.eval()
    tick = time.time()
    bar = tqdm(total=len(labels) * cfg.epochs, desc="neural cleanse", unit="epoch", disable=not progress,
               leave=False, dynamic_ncols=True)
    try:
        triggers = [reverse_trigger(model, x, lab, cfg, progress_bar=bar) for lab in labels]
    finally:
        bar.close()
        model.train(was_training)
    norms = [t.l1 for t in triggers]
    idx = anomaly_indices(norms)
    med = float(np.median(norms))
    idx = [float(v) if n < med else 0.0 for v, n in zip(idx, norms)]
    k = int(np.argmin(norms))
    flagged = [lab for lab, v in zip(labels, idx) if v > cfg.anomaly_threshold]
    backdoored = idx[k] > cfg.anomaly_threshold
    return NeuralCleanseResult(labels, triggers, norms, idx, idx[k], backdoored, labels[k] if backdoored else None,
                               flagged, cfg.anomaly_threshold, time.time() - tick, cfg.to_dict())


UNLEARN_STAMPING = ("fixed", "per-batch")


def neural_cleanse_unlearn(model: nn.Module, x, y, cfg: TrainConfig, *, result: NeuralCleanseResult | None = None,
                           labels: list[int] | None = None, fraction: float = 0.2, stamp: str = "fixed",
                           nc_config: NeuralCleanseConfig | None = None, num_classes: int | None = None,
                           triggers: list[ReversedTrigger] | None = None, mask_boost: float = 1.0,
                           progress: bool = True, desc: str = "nc-unlearn") -> nn.Module:
    """Neural Cleanse's unlearning repair: return a copy of ``model`` fine-tuned on uint8 images ``x`` (N, C, H, W)
    with labels ``y`` (N,), where a fixed, seeded ``fraction`` of the images (paper: 20%) carry a reversed trigger
    and keep their true labels.

    The triggers come from ``result`` (a :func:`neural_cleanse` run; computed here on ``x`` with ``nc_config``
    when not given). ``labels`` picks which reversed triggers to unlearn; default the flagged labels, or the
    label with the smallest mask when none is flagged (the defender chose to repair anyway). With several
    labels the stamped images are dealt out between their triggers; ``labels=[]`` stamps nothing (plain
    fine-tuning with the same recipe, a control).

    ``stamp``: ``"fixed"`` (the paper's augmented data set: the same ``fraction`` of the images always carries
    the trigger) or ``"per-batch"`` (each image drawn into a batch carries it with probability ``fraction``, a
    fresh seeded draw every time: over many epochs every image is seen with and without the trigger).
    ``triggers``: stamp these reversed triggers instead of looking them up (``result`` and ``labels`` unused).

    ``mask_boost`` > 1: each stamped image's mask is multiplied by a factor drawn uniformly from [1,
    ``mask_boost``] and clipped to 1. The reversed mask is the *weakest* trigger that still works (its norm is
    minimised), so unlearning it alone can leave stronger versions of the same trigger, such as the attacker's,
    partly working; the boosted copies cover the range between the two."""
    if not 0 < fraction <= 1:
        raise BackdoorlabError(f"the stamped fraction must lie in (0, 1], got {fraction}")
    _check_boost(mask_boost)
    if stamp not in UNLEARN_STAMPING:
        raise BackdoorlabError(f"unknown stamping {stamp!r}; valid: {', '.join(UNLEARN_STAMPING)}")
    if triggers is None:
        if result is None:
            k = num_classes if num_classes is not None else int(y.max()) + 1
            result = neural_cleanse(model, x, k, nc_config, progress=progress)
        if labels is None:
            labels = result.labels_to_unlearn()
        triggers = [result.trigger_for(int(v)) for v in labels]
    n = len(y)
    g = torch.Generator().manual_seed(cfg.seed + 7)
    stamped = torch.randperm(n, generator=g)[:max(1, int(round(fraction * n)))]
    which = torch.full((n,), -1, dtype=torch.long)
    if triggers:  # labels=[]: plain fine-tuning with the same recipe (a control)
        which[stamped] = torch.arange(len(stamped)) % len(triggers)

    def hook(images, labels_b, indices):
        sel = which[indices]
        if stamp == "per-batch" and triggers:
            draw = torch.rand(len(indices), generator=g) < fraction
            sel = torch.where(draw, torch.randint(len(triggers), (len(indices),), generator=g), -1)
        if (sel < 0).all():
            return images, labels_b
        images = images.clone()
        for i, t in enumerate(triggers):
            s = sel == i
            if s.any():
                scale = 1 + (mask_boost - 1) * torch.rand(int(s.sum()), generator=g) if mask_boost > 1 else None
                images[s] = t.apply(images[s], scale)
        return images, labels_b

    return finetune(model, x, y, cfg, progress=progress, desc=desc, batch_hook=hook)


def _check_boost(mask_boost: float) -> None:
    if not (math.isfinite(mask_boost) and mask_boost >= 1):
        raise BackdoorlabError(f"the mask boost must be a number >= 1 (1: the reversed mask as it is), "
                               f"got {mask_boost}")


@dataclass
class UnlearningConfig(FinetuneConfig):
    """Neural Cleanse unlearning as a repairer: reverse-engineer the triggers on the clean budget (the ``nc_*``
    fields, our :class:`NeuralCleanseConfig` defaults), then fine-tune with a ``fraction`` (paper: 20%) of the
    budget stamped with the flagged label's reversed trigger, true labels kept. The fine-tuning recipe (``steps``,
    ``lr``, ``batch_size``, ``weight_decay``, ``augment``, ``seed``) is inherited from :class:`FinetuneConfig`,
    so the two differ only by the stamped images. ``labels``: unlearn these labels' triggers instead of the
    flagged ones. ``mask_boost`` (not in the paper; 1 keeps the paper's recipe): stamp masks strengthened by a
    random factor in [1, ``mask_boost``], see :func:`neural_cleanse_unlearn`. ``complete_steps`` > 0 (not in the
    paper; 0 keeps it): before unlearning, grow each reversed trigger towards its strongest version with that many
    steps of :func:`complete_trigger` and stamp the grown one. ``grow_gain`` > 0 (not in the paper; 0 keeps it):
    before that, grow each reversed trigger pixel by pixel with :func:`grow_trigger` (the budget's images of other
    labels), adding neighbouring pixels while each raises the target margin by at least ``grow_gain`` logits.
    ``restarts`` > 1 (not in the paper):
    reverse each unlearned label's trigger ``restarts - 1`` more times from fresh random starts and unlearn every
    version that reaches the attack-success threshold; independent starts can settle on different parts of
    the same trigger, and unlearning one part can leave the rest working.

    ``rounds`` > 1 repeats on the repaired model: reverse-engineer each unlearned label's trigger again (what is
    left of the backdoor) and, while it still converges to a mask whose norm is anomalous against the other
    labels' first-round norms, fine-tune the repaired model once more with every trigger found so far. The
    paper does one round."""

    fraction: float = 0.2
    stamp: str = "fixed"
    mask_boost: float = 1.0
    complete_steps: int = 0
    grow_gain: float = 0.0
    restarts: int = 1
    rounds: int = 1
    labels: list[int] | None = None
    nc_epochs: int = NeuralCleanseConfig.epochs
    nc_batch_size: int = NeuralCleanseConfig.batch_size
    nc_batches_per_epoch: int | None = NeuralCleanseConfig.batches_per_epoch
    nc_lr: float = NeuralCleanseConfig.lr
    nc_patience: int = NeuralCleanseConfig.patience
    anomaly_threshold: float = NeuralCleanseConfig.anomaly_threshold

    def validate(self):
        if not 0 < self.fraction <= 1:
            raise BackdoorlabError(f"the stamped fraction must lie in (0, 1], got {self.fraction}")
        if self.stamp not in UNLEARN_STAMPING:
            raise BackdoorlabError(f"unknown stamping {self.stamp!r}; valid: {', '.join(UNLEARN_STAMPING)}")
        _check_boost(self.mask_boost)
        if self.complete_steps < 0:
            raise BackdoorlabError(f"trigger completion steps must be >= 0, got {self.complete_steps}")
        if not (math.isfinite(self.grow_gain) and self.grow_gain >= 0):
            raise BackdoorlabError(f"the trigger growth gain must be a number >= 0 (0: no growth), "
                                   f"got {self.grow_gain}")
        if self.rounds < 1:
            raise BackdoorlabError(f"unlearning needs at least 1 round, got {self.rounds}")
        if self.restarts < 1:
            raise BackdoorlabError(f"the trigger reversal needs at least 1 start, got {self.restarts}")
        super().validate()
        self.nc_config()

    def nc_config(self) -> NeuralCleanseConfig:
        return NeuralCleanseConfig(epochs=self.nc_epochs, batch_size=self.nc_batch_size,
                                   batches_per_epoch=self.nc_batches_per_epoch, lr=self.nc_lr,
                                   patience=self.nc_patience, anomaly_threshold=self.anomaly_threshold, seed=self.seed)


@REPAIRERS.register("nc-unlearning", UnlearningConfig,
                    "Neural Cleanse unlearning (Wang et al. 2019): reverse-engineer the trigger, fine-tune "
                    "with it stamped on clean images under their true labels.")
def nc_unlearning(model: nn.Module, budget, cfg: UnlearningConfig | None = None, *, progress: bool = True,
                  num_classes: int | None = None) -> tuple[nn.Module, dict]:
    """The repairer form (``repair("nc-unlearning", ...)``): Neural Cleanse on the clean ``budget``, then
    :func:`neural_cleanse_unlearn`. Returns ``(model, info)`` with the detection summary and the labels
    unlearned."""
    cfg = cfg or UnlearningConfig()
    tick = time.time()
    if num_classes is None:
        num_classes = _num_classes(model) or int(budget.y.max()) + 1
    result = neural_cleanse(model, budget.x, num_classes, cfg.nc_config(), progress=progress)
    labels = cfg.labels if cfg.labels is not None else result.labels_to_unlearn()
    triggers = [result.trigger_for(int(v)) for v in labels]
    nc_cfg = cfg.nc_config()
    restarts = []
    bar = tqdm(total=len(labels) * (cfg.restarts - 1) * nc_cfg.epochs, desc="neural cleanse restarts", unit="epoch",
               disable=not progress or cfg.restarts == 1, leave=False, dynamic_ncols=True)
    try:
        for v in labels:
            for r in range(1, cfg.restarts):
                t = reverse_trigger(model, budget.x, int(v), nc_cfg, progress_bar=bar,
                                    generator=torch.Generator().manual_seed(cfg.seed + 1000 * int(v) + 104729 * r))
                restarts.append({"label": int(v), "start": r, "l1": _finite(t.l1), "converged": t.converged})
                if t.converged:
                    triggers.append(t)
    finally:
        bar.close()
    grown = []
    if cfg.grow_gain:
        triggers, grown = _grown(model, budget, triggers, cfg)
    completed = []
    if cfg.complete_steps:
        triggers = [complete_trigger(model, budget.x, t, nc_cfg, steps=cfg.complete_steps) for t in triggers]
        completed = [{"label": t.label, "l1": _finite(t.l1), "attack_success": t.attack_success} for t in triggers]
    repaired = neural_cleanse_unlearn(model, budget.x, budget.y, cfg.train_config(), triggers=triggers,
                                      fraction=cfg.fraction, stamp=cfg.stamp, mask_boost=cfg.mask_boost,
                                      progress=progress)
    later = []
    first = dict(zip(result.labels, result.l1_norms))
    for r in range(2, cfg.rounds + 1):
        found = []
        for v in labels:
            t = reverse_trigger(repaired, budget.x, int(v), nc_cfg,
                                generator=torch.Generator().manual_seed(cfg.seed + 1000 * int(v) + 7919 * r))
            norms = [t.l1 if lab == v else n for lab, n in first.items()]
            index = float(anomaly_indices(norms)[list(first).index(v)]) if t.l1 < np.median(norms) else 0.0
            later.append({"round": r, "label": int(v), "l1": _finite(t.l1), "converged": t.converged,
                          "anomaly_index": _finite(index)})
            if t.converged and index > cfg.anomaly_threshold:
                if cfg.grow_gain:
                    t = _grown(repaired, budget, [t], cfg)[0][0]
                found.append(complete_trigger(repaired, budget.x, t, nc_cfg, steps=cfg.complete_steps))
        if not found:
            break
        triggers += found
        repaired = neural_cleanse_unlearn(repaired, budget.x, budget.y, cfg.train_config(), triggers=triggers,
                                          fraction=cfg.fraction, stamp=cfg.stamp, mask_boost=cfg.mask_boost,
                                          progress=progress, desc=f"nc-unlearn round {r}")
    summary = {k: v for k, v in result.to_dict().items() if k != "config"}
    return repaired, {"config": cfg.to_dict(), "neural_cleanse": summary, "unlearned_labels": list(labels),
                      "restarts": restarts, "grown": grown, "completed": completed, "later_rounds": later,
                      "seconds": round(time.time() - tick, 1)}


def _grown(model: nn.Module, budget, triggers: list[ReversedTrigger], cfg: UnlearningConfig):
    """:func:`grow_trigger` on each trigger with the budget's images of other labels; (triggers, summaries)."""
    out, info = [], []
    for t in triggers:
        g, added = grow_trigger(model, budget.x[budget.y != t.label], t, min_gain=cfg.grow_gain, seed=cfg.seed)
        out.append(g)
        info.append({"label": t.label, "pixels_added": added, "l1": _finite(g.l1),
                     "attack_success": g.attack_success})
    return out, info


def _num_classes(model: nn.Module) -> int | None:
    args = getattr(model, "arch_args", None)
    if isinstance(args, dict) and "num_classes" in args:
        return int(args["num_classes"])
    fc = getattr(model, "fc", None)
    return int(fc.out_features) if isinstance(fc, nn.Linear) else None
