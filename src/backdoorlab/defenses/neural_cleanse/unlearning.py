"""Neural Cleanse's repair: fine-tune on the clean budget with a fraction of the images stamped with the
reversed trigger(s) under their true labels (:func:`neural_cleanse_unlearn`), and the registered repairer
``nc-unlearning`` with our optional additions (restarts, trigger growth, several rounds)."""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ...config import interval, option
from ...errors import BackdoorlabError
from ...train import TrainConfig
from ...triggers import stamp_parts
from ..finetune import FinetuneConfig, finetune
from ..repair import REPAIRERS
from .config import NeuralCleanseConfig
from .detection import NeuralCleanseResult, _finite, anomaly_indices, neural_cleanse
from .growth import complete_trigger, grow_trigger
from .reverse import reverse_trigger
from .trigger import ReversedTrigger


UNLEARN_STAMPING = ("fixed", "per-batch")


def neural_cleanse_unlearn(model: nn.Module, x, y, cfg: TrainConfig, *, result: NeuralCleanseResult | None = None,
                           labels: list[int] | None = None, fraction: float = 0.2, stamp: str = "fixed",
                           nc_config: NeuralCleanseConfig | None = None, num_classes: int | None = None,
                           triggers: list[ReversedTrigger] | None = None, mask_boost: float = 1.0,
                           progress: bool = True, desc: str = "nc-unlearn", weights_at=None) -> nn.Module:
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
    partly working; the boosted copies cover the range between the two.

    ``weights_at``: passed to :func:`~backdoorlab.defenses.finetune.finetune` (the loss taken at other weights
    than the model's own; PAM's path-aware step)."""
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

    def boosted(t: ReversedTrigger):
        """Stamp ``t`` on a batch, its mask scaled by a factor drawn per image (with ``mask_boost`` > 1)."""
        def stamp_batch(images):
            scale = 1 + (mask_boost - 1) * torch.rand(len(images), generator=g) if mask_boost > 1 else None
            return t.apply(images, scale)
        return stamp_batch

    stamps = [boosted(t) for t in triggers]

    def hook(images, labels_b, indices):
        sel = which[indices]
        if stamp == "per-batch" and triggers:
            draw = torch.rand(len(indices), generator=g) < fraction
            sel = torch.where(draw, torch.randint(len(triggers), (len(indices),), generator=g), -1)
        return stamp_parts(images, sel, stamps), labels_b

    return finetune(model, x, y, cfg, progress=progress, desc=desc, batch_hook=hook, weights_at=weights_at)


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

    fraction: float = option(0.2, check=interval("(0, 1]"))
    stamp: str = option("fixed", choices=UNLEARN_STAMPING)
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
        try:
            self.nc_config()
        except BackdoorlabError as e:  # the nc_* fields are Neural Cleanse's own
            raise BackdoorlabError(f"Neural Cleanse's {e}") from None

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
    return reverse_and_unlearn(model, budget, cfg or UnlearningConfig(), progress=progress, num_classes=num_classes)


def reverse_and_unlearn(model: nn.Module, budget, cfg: UnlearningConfig, *, progress: bool = True,
                        num_classes: int | None = None, weights_at=None) -> tuple[nn.Module, dict]:
    """The body of ``nc-unlearning`` (every round of it), shared with the repairers that unlearn the same
    reversed triggers with another step: ``weights_at`` goes to every :func:`neural_cleanse_unlearn`."""
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
                                      progress=progress, weights_at=weights_at)
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
                                          progress=progress, desc=f"nc-unlearn round {r}", weights_at=weights_at)
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
