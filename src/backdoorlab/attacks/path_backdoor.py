"""The adaptive attack on the mode-connectivity sanitizer (Zhao et al., ICLR 2020): a backdoor that an attacker who
knows the defense builds to last along paths in weight space.

Threat model (the paper's adaptive setting): the attacker trains and releases the model, knows that the victim
will connect it to a second model by a curve trained on a small clean data set and pick a point away from the
suspect, and has data of its own (clean images it can poison), but not the victim's clean data. Here the attacker's
images come from the training part of the data set and never from the defender's held-out pool
(:func:`backdoorlab.runs.model_attack_run` draws them).

Stage 1, the paper's attack: connect the backdoored model to a second backdoored model by a quadratic Bezier curve
trained on the attacker's *poisoned* data (clean images with their labels, plus a fraction of each batch stamped
with the trigger and labelled with the target), so that every model on the path keeps both the clean accuracy and
the backdoor, and release a model of that path (``release_t``). The second model is the suspect with its hidden
units permuted (the same function far away in weight space, :mod:`backdoorlab.symmetry`), which is also what the
one-model sanitizer connects a suspect to. The curve is the sanitizer's own trainer
(:meth:`~backdoorlab.defenses.ModeConnectivitySanitizer.fit_curve`, random control point, one-cycle SGD, t drawn
per batch), given the poisoning as its batch hook.

Stage 2 (``harden_rounds`` > 0; ours, not the paper's): simulated sanitizer runs. Each round the attacker does what
the one-model sanitizer does, with its own clean images: it permutes the released model and trains a curve between
the two from a fresh random control point on clean data only. It then fine-tunes the released model on its
poisoned data with the loss taken, half the batches, at the model itself and, the other half, at a point of that
curve the sanitizer's rule may pick (t uniform in [min_distance, 1 - min_distance]) with the control point and the
permuted copy held fixed: the gradient reaches the released weights through their (1 - t)^2 share of the point
(:class:`CurvePointWeights`, the ``weights_at`` of :func:`~backdoorlab.defenses.finetune.finetune`). It is a
first-order approximation of the bilevel goal "a backdoor that survives a clean curve trained from me": the
defender's curve, trained from another random start on other images, is not the one the attacker trained against.
"""

from __future__ import annotations

import copy
import time
from dataclasses import asdict, dataclass, replace

import torch
from torch import nn

from ..augment import AUGMENTATIONS
from ..budget import CleanBudget
from ..config import Config, at_least, interval, option
from ..curves import reestimate_bn
from ..errors import BackdoorlabError, valid_names
from ..metrics import predict
from ..train import TrainConfig
from .backdoor import Backdoor
from .model_attacks import MODEL_ATTACKS, ModelAttackData
from .weights import relative_change

REPORT_TS = (0.0, 0.25, 0.5, 0.75, 1.0)
MIN_ATTACKER_IMAGES = 20


@dataclass
class PathBackdoorConfig(Config):
    """Settings of the path backdoor. ``release_t``: the point of the attacker's path that is released.
    ``curve_steps``, ``lr``, ``batch_size``, ``weight_decay``, ``augment``: the attacker's curve (the sanitizer's
    recipe; ``augment`` is applied before the trigger is stamped; ``"auto"``, the default: the sanitizer's own
    augmentation for the data set, which the attacker imitates, see ``resolve_augment``). ``poison_fraction``: the
    share of each batch that gets the trigger and the target label. ``harden_rounds``: simulated sanitizer runs
    after the release (0: the paper's attack alone), each a clean curve of ``harden_curve_steps`` and then
    ``harden_steps`` of fine-tuning at ``harden_lr``; ``min_distance``: the sanitizer's, where the hardening samples
    its t."""

    release_t: float = option(0.5, check=interval("(0, 1)"))
    curve_steps: int = option(2400, flag="--steps", check=at_least(1))
    lr: float = option(0.05, check=(lambda v: v > 0, "> 0"))
    batch_size: int = option(128, check=at_least(1))
    weight_decay: float = option(5e-4, check=at_least(0))
    augment: str = "auto"
    poison_fraction: float = option(0.25, check=interval("(0, 1)"))
    harden_rounds: int = option(0, check=at_least(0))
    harden_curve_steps: int = option(600, check=at_least(1))
    harden_steps: int = option(300, check=at_least(1))
    harden_lr: float = option(0.01, check=(lambda v: v > 0, "> 0"))
    min_distance: float = option(0.2, check=interval("(0, 0.5]"))
    seed: int = option(0, flag="--seed")

    def validate(self):
        if self.augment != "auto" and self.augment not in AUGMENTATIONS:
            raise BackdoorlabError(f"unknown augmentation {self.augment!r} for path-backdoor; "
                                   f"valid: auto, {valid_names(AUGMENTATIONS)}")

    def resolve_augment(self, dataset_name: str) -> "PathBackdoorConfig":
        """``augment="auto"`` made concrete: the augmentation the sanitizer trains its curve with on
        ``dataset_name`` (affine for greyscale data, crop-flip-jpeg for colour), since the attacker's curve imitates
        the defender's."""
        if self.augment != "auto":
            return self
        from ..data.registry import sanitizer_augmentation
        return replace(self, augment=sanitizer_augmentation(dataset_name))

    def sanitizer_config(self, steps: int, seed: int):
        """The sanitizer settings the attacker's curves are trained with (its recipe, the attacker's numbers)."""
        from ..defenses.mode_connectivity import SanitizerConfig
        return SanitizerConfig(steps=steps, lr=self.lr, batch_size=self.batch_size, weight_decay=self.weight_decay,
                               augment=self.augment, verify=False, seed=seed)


class PoisonHook:
    """``fit``'s batch hook: stamp the trigger on a seeded ``fraction`` of each batch's eligible images (not
    already of the target, for an all-to-one backdoor) and give them the backdoor's labels."""

    def __init__(self, backdoor, num_classes: int, fraction: float, seed: int):
        self.backdoor, self.num_classes, self.fraction = backdoor, num_classes, fraction
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, images: torch.Tensor, labels: torch.Tensor, indices=None):
        eligible = torch.nonzero(self.backdoor.eligible(labels)).flatten()
        n = int(round(self.fraction * len(labels)))
        pick = eligible[torch.randperm(len(eligible), generator=self.generator)[:n]]
        if len(pick) == 0:
            return images, labels
        images, labels = images.clone(), labels.clone()
        images[pick] = self.backdoor.trigger.apply(images[pick], training=True, generator=self.generator)
        labels[pick] = self.backdoor.target_labels(labels[pick], self.num_classes)
        return images, labels


class CurvePointWeights:
    """``weights_at`` for :func:`~backdoorlab.defenses.finetune.finetune`: on half the batches the model's own
    parameters, on the others the parameters of a Bezier curve from the model (t = 0) through a fixed control
    point to a fixed far end, at t uniform in [``low``, 1 - ``low``]. The control point and the end are detached,
    so the gradient reaches only the model's weights, through their ``(1 - t)^2`` share of the point."""

    def __init__(self, control: dict[str, torch.Tensor], end: dict[str, torch.Tensor], low: float, seed: int):
        self.control = {k: v.detach() for k, v in control.items()}
        self.end = {k: v.detach() for k, v in end.items()}
        self.low = low
        self.generator = torch.Generator().manual_seed(seed)

    def __call__(self, model: nn.Module) -> dict[str, torch.Tensor]:
        own = dict(model.named_parameters())
        if torch.rand(1, generator=self.generator).item() < 0.5:
            return own
        t = self.low + (1 - 2 * self.low) * torch.rand(1, generator=self.generator).item()
        a, b, c = (1 - t) ** 2, 2 * t * (1 - t), t ** 2
        return {k: a * p + b * self.control[k] + c * self.end[k] for k, p in own.items()}


def path_scores(curve, x: torch.Tensor, y: torch.Tensor, backdoor, num_classes: int, bn_data: torch.Tensor,
                ts=REPORT_TS) -> list[dict]:
    """Clean accuracy and ASR of the curve's models at ``ts`` on images ``x`` (batch norm re-estimated on
    ``bn_data`` at each t): how far the backdoor lasts along a path."""
    rows = []
    for t in ts:
        model = curve.model_at(t, bn_data=bn_data)
        rows.append({"t": t, **_scores(model, x, y, backdoor, num_classes)})
    return rows


def _scores(model: nn.Module, x: torch.Tensor, y: torch.Tensor, backdoor, num_classes: int) -> dict:
    m = backdoor.measure(model, x, y, num_classes)
    return {"clean_accuracy": (predict(model, x) == y).float().mean().item(),
            "attack_success_rate": m["attack_success_rate"]}


def path_backdoor(model: nn.Module, backdoor, x: torch.Tensor, y: torch.Tensor, num_classes: int,
                  cfg: PathBackdoorConfig, progress: bool = True) -> tuple[nn.Module, dict]:
    """Build the path backdoor from ``model`` (a backdoored model carrying ``backdoor``, which must be a trigger
    backdoor) with the attacker's clean images ``x`` (uint8 or float (N, C, H, W)) and labels ``y``.

    Returns the released model (eval mode) and a report: the attacker's path scored on its own images
    (``attacker_path``), each hardening round's simulated sanitizer path before and after the round
    (``rounds``), the seconds taken and the settings."""
    from ..defenses.mode_connectivity import ModeConnectivitySanitizer
    from ..defenses.finetune import finetune

    if not isinstance(backdoor, Backdoor):  # a dynamic backdoor with several targets has several triggers
        raise BackdoorlabError("path-backdoor needs a backdoor with one trigger and one label mapping (badnets, "
                               "blended, or dynamic with one target)")
    backdoor.check(num_classes)
    if cfg.augment == "auto":
        raise BackdoorlabError("path-backdoor's augment='auto' names the sanitizer's augmentation for a data set; "
                               "resolve it first (PathBackdoorConfig.resolve_augment(dataset_name), or give "
                               "ModelAttackData its dataset_name)")
    if len(y) < MIN_ATTACKER_IMAGES:
        raise BackdoorlabError(f"path-backdoor needs at least {MIN_ATTACKER_IMAGES} attacker images, got {len(y)}")
    tick = time.time()
    model = copy.deepcopy(model).eval()
    original = {k: v.detach().clone() for k, v in model.named_parameters()}
    attacker = CleanBudget(x, y, torch.arange(len(y)))
    bn_data = x
    # Stage 1: the paper's attack, a curve from the model to its permuted copy trained on poisoned data.
    builder = ModeConnectivitySanitizer(cfg.sanitizer_config(cfg.curve_steps, cfg.seed), progress=progress)
    partner, groups = builder.make_permuted_endpoint(model, attacker)
    hook = PoisonHook(backdoor, num_classes, cfg.poison_fraction, cfg.seed + 7)
    curve = builder.fit_curve(model, partner, attacker, batch_hook=hook, desc="attacker's curve (poisoned data)")
    attacker_path = path_scores(curve, x, y, backdoor, num_classes, bn_data)
    released = curve.model_at(cfg.release_t, bn_data=bn_data)
    # Stage 2: simulated sanitizer runs, each followed by fine-tuning against its curve.
    rounds = []
    for r in range(cfg.harden_rounds):
        seed = cfg.seed + 100 * (r + 1)
        defender = ModeConnectivitySanitizer(cfg.sanitizer_config(cfg.harden_curve_steps, seed), progress=progress)
        end, _ = defender.make_permuted_endpoint(released, attacker)
        clean_curve = defender.fit_curve(released, end, attacker, desc=f"simulated sanitizer, round {r + 1}")
        before = path_scores(clean_curve, x, y, backdoor, num_classes, bn_data, ts=(0.5,))[0]
        control = dict(zip(clean_curve.names, clean_curve.control))
        weights = CurvePointWeights(control, clean_curve.theta2, cfg.min_distance, seed + 1)
        tc = TrainConfig(epochs=0, steps=cfg.harden_steps, lr=cfg.harden_lr, batch_size=cfg.batch_size,
                         weight_decay=cfg.weight_decay, augment=cfg.augment, seed=seed + 2)
        released = finetune(released, x, y, tc, progress=progress, desc=f"hardening, round {r + 1}",
                            batch_hook=PoisonHook(backdoor, num_classes, cfg.poison_fraction, seed + 3),
                            weights_at=weights)
        reestimate_bn(released, bn_data)
        # the same clean curve with the hardened model as its start: what the update bought against this curve
        clean_curve.theta0 = {k: v.detach().clone() for k, v in released.named_parameters()}
        after = path_scores(clean_curve, x, y, backdoor, num_classes, bn_data, ts=(0.5,))[0]
        rounds.append({"round": r + 1, "simulated_t05_before": before, "simulated_t05_after": after})
    released = reestimate_bn(released, bn_data)
    report = {"attacker_images": len(y), "attacker_path": attacker_path, "released_t": cfg.release_t,
              "released_on_attacker_images": _scores(released, x, y, backdoor, num_classes),
              "rounds": rounds, "unit_groups": len(groups.groups),
              "relative_weight_change": relative_change(original, dict(released.named_parameters())),
              "relative_distance": relative_distance(released, model), "seconds": round(time.time() - tick, 1),
              "config": asdict(cfg)}
    return released.eval(), report


@MODEL_ATTACKS.register("path-backdoor", PathBackdoorConfig,
                        "Adaptive attack on the mode-connectivity sanitizer (Zhao et al. 2020): release a model of a "
                        "curve trained on the attacker's poisoned data, so that the whole path keeps the backdoor.",
                        trigger=True, carried_backdoor=True, settings="settings")
def path_backdoor_attack(model, cfg: PathBackdoorConfig | None, data: ModelAttackData):
    if data.backdoor is None:
        raise BackdoorlabError("path-backdoor needs a backdoor (trigger and target)")
    cfg = cfg or PathBackdoorConfig()
    if data.dataset_name:  # without a name, an "auto" augmentation is refused by path_backdoor, not guessed
        cfg = cfg.resolve_augment(data.dataset_name)
    attacked, report = path_backdoor(model, data.backdoor, data.attacker_x, data.attacker_y, data.num_classes, cfg,
                                     data.progress)
    return attacked, report, data.backdoor


def relative_distance(a: nn.Module, b: nn.Module) -> float:
    """||theta_a - theta_b|| / ||theta_b|| over all parameters: how far the released model lies from the suspect."""
    pa, pb = dict(a.named_parameters()), dict(b.named_parameters())
    num = sum(float((pa[k].detach() - pb[k].detach()).pow(2).sum()) for k in pb)
    den = sum(float(pb[k].detach().pow(2).sum()) for k in pb)
    return (num / max(den, 1e-12)) ** 0.5
