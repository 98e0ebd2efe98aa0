"""The mode-connectivity sanitizer (Zhao et al., ICLR 2020).

Learn a curve in weight space between two models using only a small clean budget, then pick a model on it:
points away from the endpoints keep clean accuracy but lose the backdoor, which the clean data never supports.

What this implementation does, and why (details and measurements in docs/sanitizer.md):
- The control point starts from a *fresh random initialisation* (``init="random"``), not from the midpoint of
  the endpoints: on small models the endpoints are nearly linearly connected, and a curve started at their
  midpoint stays in the backdoored basin.
- The curve is trained on the fit part of the budget with t ~ U(0, 1) drawn per batch, with augmentation,
  weight decay on the control point and a one-cycle schedule.
- t is chosen from clean data only: a validation slice of the budget (never used to fit the curve) is scored
  at every t of a grid, and the rule picks the t farthest from the suspect endpoint(s) whose validation
  accuracy is within ``ca_tolerance`` of the best validation accuracy among the points the rule may take
  (those ``min_distance`` or more from every suspect end; :func:`select_t`), never a suspect end itself.
- The chosen t keeps ``min_distance`` (0.2) from every suspect end: one grid step from a suspect every path
  measured still obeyed the trigger. When nothing that far is within the tolerance, the rule gives up accuracy,
  not distance, and its verdict says so (:func:`select_guarded`).
- The backdoor check (``verify``, :mod:`.backdoor_check`): Neural Cleanse on the suspect(s) once; the rule's
  choice is then checked by reverse-engineering the suspect's flagged label(s) on it, and while the mask found
  is still anomalous among the suspect's labels the choice moves one grid step further from the suspect(s).
  The refined model is checked too, and where Neural Cleanse flags nothing on the suspect there is nothing to
  check it with, so the refine is left out: fine-tuning near a suspect can pull its backdoor back
  (docs/sanitizer.md). What the rule could not achieve is in the verdict.
- With one suspect model, the second endpoint is the suspect itself with its hidden units permuted
  (``second_endpoint="permuted"``, TSC, Peng et al. 2025; :mod:`backdoorlab.symmetry`): the same function far
  away in weight space, so both ends are the suspect and the rule keeps away from both, and the curve's
  middle keeps what the suspect learned from its large training set. A fresh model trained from scratch on the
  budget (``"scratch"``) is as accurate as that budget allows, which on CIFAR-10 is far below the suspect. A
  student distilled from the suspect (``"distill"``) inherits part of the backdoor through the soft labels,
  and a fine-tuned copy (``"finetune"``) sits too close to the suspect and keeps it.
- Batch-norm statistics are re-estimated on the budget at every evaluated t, and the exported model carries
  the statistics of its own t.
- With two suspects, the rule's two candidates equally far from them (t and 1 - t, both within tolerance) are
  averaged (``ensemble``): the exported model is an :class:`~backdoorlab.models.Ensemble` of the models at both
  points (the mean of their softmax outputs), which on CIFAR-10 scored above the better of the two (docs/sanitizer.md,
  "Averaging two points of the path").
- An interior choice is then fine-tuned on the whole budget (``refine_steps``), but only if a trial refine of
  the same length on the fit part alone lowers the validation slice's cross-entropy (``refine_guard``):
  near a backdoored endpoint fine-tuning can pull the model back into its basin, which costs clean accuracy too.
  The loss, not the accuracy, decides: on a slice of 100 images accuracy moves in steps of one image, and it
  once rejected a refine that raised accuracy on 4,000 development images (docs/sanitizer.md).
"""

from __future__ import annotations

import copy
import time
from dataclasses import dataclass, field

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm.auto import tqdm

from ..budget import CleanBudget
from ..curves import CURVES, Curve, reestimate_bn
from ..config import Config, above, at_least, interval, option
from ..device import model_device, to_device
from ..errors import BackdoorlabError, valid_names
from ..metrics import accuracy, evaluate, predict_logits
from ..models.ensemble import Ensemble
from ..augment import AUGMENTATIONS, augment
from ..tensors import to_float
from ..train import TrainConfig, fit, seed_everything
from ..symmetry import UnitGroups, find_unit_groups, match_units, permuted_copy
from .backdoor_check import BackdoorCheck
from .finetune import distillation_loss, finetune
from .repair import REPAIRERS

SECOND_ENDPOINTS = ("permuted", "scratch", "distill", "finetune")
CONTROL_INITS = ("random", "scratch", "midpoint")


@dataclass
class SanitizerConfig(Config):
    """Hyperparameters of the sanitizer. Step counts are optimizer steps over the fit part of the budget."""

    curve: str = option("bezier", choices=CURVES)
    init: str = option("random", choices=CONTROL_INITS)  # the control point's start
    steps: int = 2400
    lr: float = 0.05
    weight_decay: float = 5e-4
    batch_size: int = 128
    augment: str = "affine"
    val_fraction: float = option(0.1, check=interval("(0, 1)"))
    min_val: int = 50
    grid: int = option(11, check=at_least(3))  # points of the t grid
    ca_tolerance: float = option(0.04, check=at_least(0))  # clean-accuracy tolerance of the rule (see select_t)
    second_endpoint: str = option("permuted", choices=SECOND_ENDPOINTS)
    # permuted second endpoint: 2 adds TSC's second stage (a curve from the aligned suspect)
    stages: int = option(1, check=(lambda v: v in (1, 2), "1 or 2"))
    second_steps: int | None = None  # training steps of a scratch/distilled/fine-tuned second endpoint (None: steps)
    second_lr: float = 0.05
    distill_temperature: float = 4.0
    distill_alpha: float = 0.9
    curve_distill: float = 0.0  # weight of distillation from the endpoints' mean prediction in the curve loss
    curve_mixup: float = 0.0  # mixup of the curve's training batches: Beta(a, a) mixing weights (0: off)
    bn_augment: str = "auto"  # augmentation of the budget images batch norm is re-estimated on (see bn_data)
    refine_steps: int = 600  # after choosing an interior t: fine-tune that model on the whole budget (fit + val)
    refine_lr: float = 0.01
    refine_guard: bool = True  # refine only if a trial refine on the fit part lowers the validation loss
    ensemble: bool = True  # two suspects: average the models at t and 1 - t when the rule finds both (see select_ts)
    # the chosen t keeps at least this far from every suspect end (see select_guarded)
    min_distance: float = option(0.2, check=interval("(0, 0.5]"))
    verify: bool = True  # check the choice with Neural Cleanse; move away while it carries the backdoor
    # anomaly index above which a checked model still carries the backdoor
    verify_threshold: float = option(2.0, check=above(0))
    seed: int = 0

    def validate(self):
        if self.second_steps is None:
            self.second_steps = self.steps
        for name in ("steps", "second_steps"):
            if getattr(self, name) < 1:
                raise BackdoorlabError(f"{name} must be >= 1, got {getattr(self, name)}")
        if self.refine_steps < 0:
            raise BackdoorlabError(f"refine steps must be >= 0, got {self.refine_steps}")
        if self.curve_mixup < 0:
            raise BackdoorlabError(f"curve mixup must be >= 0 (0: off), got {self.curve_mixup}")
        if self.curve_mixup > 0 and self.curve_distill > 0:
            raise BackdoorlabError("curve mixup and curve distillation cannot be combined; set one of them to 0")
        if self.bn_augment != "auto" and self.bn_augment not in AUGMENTATIONS:
            raise BackdoorlabError(f"unknown batch-norm augmentation {self.bn_augment!r}; "
                                   f"valid: {valid_names(AUGMENTATIONS)}")

    def train_config(self, steps: int, lr: float, seed: int) -> TrainConfig:
        return TrainConfig(epochs=0, steps=steps, lr=lr, batch_size=self.batch_size, weight_decay=self.weight_decay,
                           augment=self.augment, schedule="onecycle", seed=seed)


@dataclass
class SanitizeResult:
    """The sanitized model and how it was chosen. ``path`` has one row per grid t."""

    model: nn.Module
    t: float  # the rule's choice (with an ensemble, the member the tie-breaks preferred)
    path: list[dict]
    curve: Curve
    seconds: dict = field(default_factory=dict)
    second_endpoint: str | None = None
    second_model: nn.Module | None = None  # the t = 1 endpoint the sanitizer made (one-model case)
    refined: bool = False  # whether the chosen model was fine-tuned on the whole budget (interior t only)
    refine_check: dict | None = None  # the guard's trial: validation accuracy and loss before and after, the verdict
    ensemble_ts: list[float] | None = None  # the points averaged into the exported model, sorted (None: one model)
    stages: list[dict] = field(default_factory=list)  # permuted endpoint: each stage's path and choice (see sanitize)
    unit_groups: dict | None = None  # permuted endpoint: how many hidden units were permuted, and what was left alone
    verdict: dict = field(default_factory=dict)  # the rule's verdict on the exported choice (see select_guarded)


def select_t(ts, val_acc, suspect_ends=(0, 1), tolerance: float = 0.04, val_loss=None) -> float:
    """Pick t from clean validation data alone.

    Among the grid points whose validation accuracy is at least ``max(val_acc) - tolerance``, return the one
    farthest from the suspect endpoint(s) (``suspect_ends``: (0, 1) when both endpoints are suspect, (0,) when
    only the model at t = 0 is). Ties go to the higher validation accuracy, then (when ``val_loss`` is given) to
    the lower validation cross-entropy, then to the smaller t. On a slice of a few hundred images two points
    equally far from the ends often score the same accuracy (one image is a large step on a small slice); the
    mean loss is a finer measure of the same clean data and rarely ties.
    """
    return select_ts(ts, val_acc, suspect_ends, tolerance, val_loss)[0]


def distance_from_suspects(t: float, suspect_ends) -> float:
    """How far ``t`` lies from the nearest suspect end, rounded so that grid points compare exactly."""
    return round(min(abs(t - e) for e in suspect_ends), 9)


def allowed_rows(rows: list[dict], suspect_ends, min_distance: float) -> list[dict]:
    """The path rows the rule may take: at least ``min_distance`` from every suspect end. Their best validation
    accuracy is what the tolerance is counted from (:func:`select_guarded`, and the backdoor check's moves)."""
    return [r for r in rows if distance_from_suspects(r["t"], suspect_ends) >= min_distance - 1e-9]


def select_ts(ts, val_acc, suspect_ends=(0, 1), tolerance: float = 0.04, val_loss=None) -> list[float]:
    """Every grid point :func:`select_t`'s rule could take before its tie-breaks: within ``tolerance`` of the
    best validation accuracy and as far from the suspect endpoint(s) as any such point. The one the tie-breaks
    prefer (:func:`select_t`'s answer) comes first, the rest follow in increasing t. With two suspects these are
    t and 1 - t, or 0.5 alone; with one, a single point."""
    ts, val_acc = list(map(float, ts)), list(map(float, val_acc))
    loss = [0.0] * len(ts) if val_loss is None else list(map(float, val_loss))
    best = max(val_acc)
    ok = [i for i, a in enumerate(val_acc) if a >= best - tolerance - 1e-12]
    dist = [distance_from_suspects(t, suspect_ends) for t in ts]
    far = [i for i in ok if dist[i] == max(dist[j] for j in ok)]
    first = max(far, key=lambda i: (val_acc[i], -round(loss[i], 9), -ts[i]))
    return [ts[first]] + sorted(ts[i] for i in far if i != first)


def select_t_from_rows(rows: list[dict], suspect_ends=(0, 1), tolerance: float = 0.04) -> float:
    """:func:`select_t` on path rows (``t``, ``val_accuracy`` and, where scored, ``val_loss``)."""
    return select_ts_from_rows(rows, suspect_ends, tolerance)[0]


def select_ts_from_rows(rows: list[dict], suspect_ends=(0, 1), tolerance: float = 0.04) -> list[float]:
    """:func:`select_ts` on path rows (``t``, ``val_accuracy`` and, where scored, ``val_loss``)."""
    loss = [r["val_loss"] for r in rows] if all("val_loss" in r for r in rows) else None
    return select_ts([r["t"] for r in rows], [r["val_accuracy"] for r in rows], suspect_ends, tolerance, loss)


def select_guarded(rows: list[dict], suspect_ends=(0, 1), tolerance: float = 0.04, min_distance: float = 0.2
                   ) -> tuple[list[float], dict]:
    """The sanitizer's rule: among the grid points at least ``min_distance`` (in t) from every suspect end, the
    farthest from the suspects whose validation accuracy is within ``tolerance`` of the best of *those* points
    (:func:`select_ts`'s tie-breaks), and a verdict on it. Returns the ts to export (the tie-breaks' choice
    first, then an equally far mirror) and ``{"within_tolerance", "tolerance", "min_distance", "note"}``.

    Why a floor: the backdoor fades with the distance from a suspect, at a rate the clean data does not show.
    One grid step (0.1) from a suspect every path measured still obeyed the trigger, so the rule never goes
    nearer. Why the tolerance is anchored on the allowed points and not on the whole path: the best validation
    accuracy on a path is usually a suspect's own, which on a backdoored model cannot be trusted, and a window
    hung from it stops on the suspect's side wherever the path's middle is a few points weaker (an untuned
    Fashion-MNIST suspect: 0.3 from the suspects, still 8% ASR). ``within_tolerance`` is false when even the
    best allowed point is more than ``tolerance`` under the best on the path (the suspects' own included): the
    export then costs more clean accuracy than the tolerance allows, and the verdict says so.
    """
    allowed = allowed_rows(rows, suspect_ends, min_distance)
    if not allowed:
        raise BackdoorlabError(f"no point of the t grid lies {min_distance} or more from the suspect end(s) "
                               f"{list(suspect_ends)}: use a finer grid or a smaller minimum distance")
    best = max(r["val_accuracy"] for r in rows)
    reach = max(r["val_accuracy"] for r in allowed)
    verdict = {"within_tolerance": best - reach <= tolerance + 1e-12, "tolerance": tolerance,
               "min_distance": min_distance}
    ts = select_ts_from_rows(allowed, suspect_ends, tolerance)
    verdict["note"] = ("the farthest point from the suspect(s) within the tolerance of the best point "
                       f"{min_distance:.2f} or more from them" if verdict["within_tolerance"]
                       else f"every point {min_distance:.2f} or more from the suspect(s) is more than the tolerance "
                            f"under the best on the path (the best of them by {best - reach:.1%})")
    return ts, verdict


def reinitialised_copy(model: nn.Module, seed: int) -> nn.Module:
    """A copy of ``model`` with every layer's ``reset_parameters`` called (for modules built outside the registry)."""
    torch.manual_seed(seed)
    fresh = copy.deepcopy(model)
    for m in fresh.modules():
        if hasattr(m, "reset_parameters") and m is not fresh:
            m.reset_parameters()
    return fresh


def validation_scores(model: nn.Module, part: CleanBudget) -> tuple[float, float]:
    """Accuracy and mean cross-entropy of ``model`` on a slice of the budget: what the rule scores every t by, and
    what the refine guard compares before and after its trial."""
    logits = predict_logits(model, part.x)
    return accuracy(logits.argmax(1), part.y), float(F.cross_entropy(logits, part.y.long()))


class ModeConnectivitySanitizer:
    """Repair suspect model(s) with a learned curve in weight space, using a clean budget only.

    ``sanitize(suspect, budget, suspect_b=None, ...)`` returns a :class:`SanitizeResult`.
    ``model_factory`` (a zero-argument callable returning a freshly initialised model of the suspect's
    architecture) is used for the random control point and the distilled second endpoint; without it the
    suspect is copied and its layers re-initialised.
    """

    def __init__(self, config: SanitizerConfig | None = None, model_factory=None, progress: bool = True):
        self.config = config or SanitizerConfig()
        self.model_factory = model_factory
        self.progress = progress

    def _fresh(self, like: nn.Module, seed: int) -> nn.Module:
        if self.model_factory is not None:
            torch.manual_seed(seed)
            return self.model_factory().to(model_device(like))  # made on the host, seeded as on a CPU run
        return reinitialised_copy(like, seed)

    def split_budget(self, budget: CleanBudget) -> tuple[CleanBudget, CleanBudget]:
        cfg = self.config
        n_val = max(cfg.min_val, int(round(cfg.val_fraction * len(budget))))
        if len(budget) - n_val < cfg.min_val:
            raise BackdoorlabError(f"clean budget of {len(budget)} images is too small: the sanitizer needs at least "
                                   f"{2 * cfg.min_val} (a validation slice of {n_val} plus images to fit the curve)")
        return budget.split(n_val)

    def make_second_endpoint(self, suspect: nn.Module, fit_part: CleanBudget) -> nn.Module:
        """Build the t = 1 endpoint from one suspect model and the fit part of the budget."""
        cfg = self.config
        tc = cfg.train_config(cfg.second_steps, cfg.second_lr, cfg.seed + 1)
        if cfg.second_endpoint == "finetune":
            return finetune(suspect, fit_part.x, fit_part.y, tc, progress=self.progress, desc="second endpoint")
        student = self._fresh(suspect, cfg.seed + 1)
        if cfg.second_endpoint == "scratch":
            return finetune(student, fit_part.x, fit_part.y, tc, progress=self.progress, desc="second endpoint (scratch)")
        return finetune(student, fit_part.x, fit_part.y, tc, progress=self.progress, desc="second endpoint (distill)",
                        teacher=suspect, temperature=cfg.distill_temperature, alpha=cfg.distill_alpha)

    def fit_curve(self, start: nn.Module, end: nn.Module, fit_part: CleanBudget, stage: int = 1,
                  batch_hook=None, desc: str | None = None) -> Curve:
        """Train a curve from ``start`` (t = 0) to ``end`` (t = 1) on ``fit_part``. ``stage`` > 1 (the permuted
        endpoint's second curve) shifts every seed, so that its control point starts elsewhere. ``batch_hook``
        (``fit``'s) changes each augmented batch: the sanitizer never passes one; the adaptive attack
        (:mod:`backdoorlab.attacks.path_backdoor`) stamps its trigger there, to train the same curve on poisoned
        data."""
        cfg = self.config
        seed = cfg.seed + 10 * (stage - 1)
        init_model = None
        if cfg.init == "random":
            init_model = self._fresh(start, seed + 2)
        elif cfg.init == "scratch":  # a fresh model first trained on the fit part alone
            tc = cfg.train_config(cfg.second_steps, cfg.second_lr, seed + 2)
            init_model = finetune(self._fresh(start, seed + 2), fit_part.x, fit_part.y, tc, progress=self.progress,
                                  desc="control point (scratch)")
        curve = Curve(start, end, kind=cfg.curve, init="midpoint" if cfg.init == "midpoint" else "random",
                      init_model=init_model)
        g = seed_everything(seed)
        curve.base.train()

        teachers = [start.eval(), end.eval()]
        temp, alpha = cfg.distill_temperature, cfg.curve_distill
        mix = np.random.default_rng(seed + 5)

        def loss_fn(xb, yb):
            t = torch.rand(1, generator=g).item()
            if cfg.curve_mixup > 0:  # a convex mix of two images, scored against both labels in proportion
                lam = float(mix.beta(cfg.curve_mixup, cfg.curve_mixup))
                other = torch.randperm(len(yb), generator=g)
                logits = curve(lam * xb + (1 - lam) * xb[other], t)
                loss = lam * F.cross_entropy(logits, yb) + (1 - lam) * F.cross_entropy(logits, yb[other])
                return loss, logits
            logits = curve(xb, t)
            loss = F.cross_entropy(logits, yb)
            if alpha > 0:
                with torch.no_grad():
                    soft = torch.stack([F.softmax(m(xb) / temp, 1) for m in teachers]).mean(0)
                loss = (1 - alpha) * loss + alpha * distillation_loss(logits, soft, temp)
            return loss, logits

        fit(list(curve.control), loss_fn, fit_part.x, fit_part.y, cfg.train_config(cfg.steps, cfg.lr, seed),
            progress=self.progress, generator=g, batch_hook=batch_hook,
            desc=desc or f"{cfg.curve} curve" + (f" (stage {stage})" if stage > 1 else ""))
        curve.base.eval()
        return curve

    def bn_data(self, fit_part: CleanBudget) -> torch.Tensor:
        """The images batch norm is re-estimated on at every t: the fit part of the budget, passed once through
        ``bn_augment`` (seeded, the same images at every t). Statistics match the endpoints' best when the
        images look like what the endpoints were trained on, so the repair run (:func:`backdoorlab.runs.repair_run`)
        sets it to the augmentation recorded in the suspect's checkpoint when it is ``"auto"`` (CIFAR-10: crop,
        flip and JPEG; re-estimating on pixel-exact images costs resnet20 clean accuracy at t = 0,
        docs/sanitizer.md)."""
        if self.config.bn_augment in ("none", "auto"):  # "auto": resolved by the caller, else pixel-exact
            return fit_part.x
        g = torch.Generator().manual_seed(self.config.seed + 3)
        return augment(to_float(fit_part.x), self.config.bn_augment, g)

    def path(self, curve: Curve, fit_part: CleanBudget, val_part: CleanBudget, test=None, backdoor=None,
             num_classes: int | None = None) -> list[dict]:
        """Score every grid t: validation accuracy and loss on the budget's held-out slice, and if ``test`` =
        (x, y) is given, test CA (and ASR/RA with a ``backdoor``). Batch norm is re-estimated on :meth:`bn_data`
        at each t."""
        rows, bn_data = [], self.bn_data(fit_part)
        ts = torch.linspace(0, 1, self.config.grid).tolist()
        for t in tqdm(ts, desc="path", disable=not self.progress, leave=False, dynamic_ncols=True):
            model = curve.model_at(t, bn_data=bn_data)
            val_accuracy, val_loss = validation_scores(model, val_part)
            row = {"t": round(t, 6), "val_accuracy": val_accuracy, "val_loss": val_loss}
            if test is not None:
                row.update(evaluate(model, test[0], test[1], backdoor, num_classes))
                row.pop("n_test", None)
            rows.append(row)
        return rows

    def choose(self, curve: Curve, rows: list[dict], fit_part: CleanBudget, suspect_ends=(0.0, 1.0),
               ensemble: bool | None = None) -> tuple[float, list[float], nn.Module, dict]:
        """Apply the rule (:func:`select_guarded`) to the scored ``rows`` of :meth:`path`: return ``(t, ts, model,
        verdict)``, the chosen t, the ts the exported model is made of, that model (batch norm re-estimated on
        :meth:`bn_data`) and the rule's verdict. With ``ensemble`` (default: the configuration's) and two
        candidates inside the path (t and 1 - t), ``ts`` holds both and the model is their :class:`Ensemble`;
        otherwise ``ts == [t]``. The ends are never averaged: they are suspects."""
        cfg = self.config
        ts, verdict = select_guarded(rows, suspect_ends, cfg.ca_tolerance, cfg.min_distance)
        t = ts[0]
        if not ((cfg.ensemble if ensemble is None else ensemble) and 0.0 < t < 1.0):
            ts = ts[:1]
        bn_data = self.bn_data(fit_part)
        models = [curve.model_at(u, bn_data=bn_data) for u in ts]
        return t, ts, Ensemble(models).eval() if len(models) > 1 else models[0], verdict

    def refine(self, model: nn.Module, budget: CleanBudget, steps: int | None = None, desc: str = "refine") -> nn.Module:
        """Fine-tune ``model`` on the whole ``budget`` (``steps``, default ``refine_steps``, at ``refine_lr``) and
        re-estimate its batch norm on :meth:`bn_data` of the budget: the sanitizer's refine step."""
        cfg = self.config
        tc = cfg.train_config(cfg.refine_steps if steps is None else steps, cfg.refine_lr, cfg.seed + 4)
        model = finetune(model, budget.x, budget.y, tc, progress=self.progress, desc=desc)
        return reestimate_bn(model, self.bn_data(budget))

    def refine_check(self, model: nn.Module, fit_part: CleanBudget, val_part: CleanBudget,
                     steps: int | None = None) -> dict:
        """The refine step's guard: refine a copy of ``model`` on ``fit_part`` alone and score the validation slice
        before and after (accuracy and mean cross-entropy). Returns the record, whose ``accepted`` is true when the
        trial's validation loss is lower than the model's (the whole-budget refine that follows trains on the
        slice too, so it cannot judge itself). The loss decides because it is the finer measure: on a small slice accuracy moves in whole images and can
        fall for a trial that lowers the loss and helps held-out images; over the trials measured (docs/sanitizer.md)
        the loss's direction matched the development images'.
        A tie rejects: a refine that shows no gain on clean data is not worth its risk (near a backdoored
        endpoint fine-tuning can pull the model back towards it)."""
        acc_before, loss_before = validation_scores(model, val_part)
        trial = self.refine(model, fit_part, steps, desc="refine (guard trial)")  # a copy: finetune never trains in place
        acc_after, loss_after = validation_scores(trial, val_part)
        return {"val_accuracy_before": acc_before, "val_accuracy_after_trial": acc_after,
                "val_loss_before": loss_before, "val_loss_after_trial": loss_after,
                "accepted": loss_after < loss_before, "n_val": len(val_part)}

    def verified_choice(self, curve: Curve, rows: list[dict], fit_part: CleanBudget, suspect_ends, ts: list[float],
                        verdict: dict, check: BackdoorCheck) -> tuple[list[float], nn.Module, dict]:
        """Check the rule's choice ``ts`` with ``check`` and, while the model there still carries the backdoor,
        move one grid step further from the suspect(s) and check again (with two suspect ends, both points at the
        new distance, averaged when ``ensemble`` is on). Returns the ts, the model and the updated verdict:
        ``backdoor_check`` true when a checked model was clean, false when none was (the farthest is kept)."""
        cfg = self.config
        by_t = {r["t"]: r for r in rows}
        dist = {t: distance_from_suspects(t, suspect_ends) for t in by_t}
        best = max(r["val_accuracy"] for r in allowed_rows(rows, suspect_ends, cfg.min_distance))  # the rule's anchor
        groups = [ts]
        for d in sorted({d for d in dist.values() if d > dist[ts[0]]}):
            same = sorted((t for t in by_t if dist[t] == d),
                          key=lambda t: (-by_t[t]["val_accuracy"], round(by_t[t].get("val_loss", 0.0), 9), t))
            groups.append(same if cfg.ensemble and len(suspect_ends) > 1 else same[:1])
        bn_data = self.bn_data(fit_part)
        for group in groups:
            models = [curve.model_at(u, bn_data=bn_data) for u in group]
            model = Ensemble(models).eval() if len(models) > 1 else models[0]
            record = check.check(model, fit_part.x, cfg.verify_threshold, what="t = " + " + ".join(
                f"{u:.2f}" for u in sorted(group)))
            if not record["carries"]:
                break
        moved = group != groups[0]
        verdict = {**verdict, "backdoor_check": not record["carries"]}
        if moved:
            verdict["within_tolerance"] = all(by_t[u]["val_accuracy"] >= best - cfg.ca_tolerance - 1e-12 for u in group)
            verdict["note"] = (f"moved away from the suspect(s): Neural Cleanse still found the backdoor at "
                               f"t = {groups[0][0]:.2f}")
        return group, model, verdict

    def make_permuted_endpoint(self, suspect: nn.Module, fit_part: CleanBudget) -> tuple[nn.Module, UnitGroups]:
        """The suspect with every group of hidden units reordered to push each unit's activations on the fit
        images away from its own (TSC's first stage): the same function, far away in weight space."""
        groups = find_unit_groups(suspect, fit_part.x[:8], seed=self.config.seed)
        perms = match_units(suspect, suspect, groups.groups, fit_part.x, maximize=False)
        return permuted_copy(suspect, groups.groups, perms), groups

    def sanitize(self, suspect: nn.Module, budget: CleanBudget, suspect_b: nn.Module | None = None, *, test=None,
                 backdoor=None, num_classes: int | None = None, second_model: nn.Module | None = None
                 ) -> SanitizeResult:
        """Sanitize ``suspect`` (and ``suspect_b``, if two suspect models are given) with the clean ``budget``.

        ``test`` (x, y) and ``backdoor`` are for reporting the path only; they never influence the choice of t.
        ``second_model`` (one suspect only) is a second endpoint this sanitizer made earlier with the same
        configuration on the same budget (``"scratch"``: it does not depend on the suspect); it is used instead
        of training the same model again. The caller vouches for the match (:func:`backdoorlab.runs.repair_run`
        checks the record saved with it).

        With one suspect and ``second_endpoint="permuted"`` (TSC), the first curve runs from the suspect to its
        permuted copy, so both ends are the suspect and the rule keeps away from both; with ``stages=2`` a second
        curve runs from the suspect, its units aligned with the first stage's chosen model, to that model, and
        the rule (away from the suspect, t = 0) chooses on it. ``stages`` of the result lists each stage's path.
        """
        cfg, seconds = self.config, {}
        fit_part, val_part = self.split_budget(budget)
        tick = time.time()
        second, made, groups = None, None, None
        if suspect_b is None:
            second = cfg.second_endpoint
            if second_model is not None:
                if cfg.second_endpoint != "scratch":
                    raise BackdoorlabError(f"only a scratch-trained second endpoint can be reused (it does not depend "
                                           f"on the suspect); this configuration makes it by {cfg.second_endpoint!r}")
                suspect_b = made = second_model
            elif second == "permuted":
                suspect_b, groups = self.make_permuted_endpoint(suspect, fit_part)
                made = suspect_b
            else:
                suspect_b = made = self.make_second_endpoint(suspect, fit_part)
            seconds["second_endpoint"] = time.time() - tick
            tick = time.time()
        elif second_model is not None:
            raise BackdoorlabError("a second endpoint to reuse applies to one suspect model, but two were given")
        check = None
        if cfg.verify:  # Neural Cleanse on the suspect(s) once; it checks the choice below
            suspects = [suspect] if second is not None else [suspect, suspect_b]
            check = BackdoorCheck.from_suspects(suspects, fit_part.x, num_classes or _num_classes(suspect, fit_part),
                                                progress=self.progress)
            seconds["backdoor_check"] = check.seconds
            tick = time.time()
        curve = self.fit_curve(suspect, suspect_b, fit_part)
        seconds["curve"] = time.time() - tick
        tick = time.time()
        rows = self.path(curve, fit_part, val_part, test, backdoor, num_classes)
        seconds["path"] = time.time() - tick
        ends = (0.0,) if second not in (None, "permuted") else (0.0, 1.0)  # a permuted copy is the suspect too
        two_stages = second == "permuted" and cfg.stages == 2
        t, ts, model, verdict = self.choose(curve, rows, fit_part, ends, ensemble=None if not two_stages else False)
        stages = []
        if second == "permuted":
            stages.append({"stage": 1, "start": "suspect", "end": "suspect, units permuted", "path": rows, "t": t,
                           "ensemble": sorted(ts) if len(ts) > 1 else None, "rule": verdict})
        if two_stages:
            tick = time.time()
            aligned = permuted_copy(suspect, groups.groups, match_units(model, suspect, groups.groups, fit_part.x,
                                                                        maximize=True))
            curve = self.fit_curve(aligned, model, fit_part, stage=2)
            seconds["curve_stage_2"] = time.time() - tick
            tick = time.time()
            rows = self.path(curve, fit_part, val_part, test, backdoor, num_classes)
            seconds["path_stage_2"] = time.time() - tick
            ends = (0.0,)
            t, ts, model, verdict = self.choose(curve, rows, fit_part, ends)
            stages.append({"stage": 2, "start": "suspect, units aligned with stage 1's model",
                           "end": f"stage 1's model (t = {stages[0]['t']:.2f})", "path": rows, "t": t,
                           "ensemble": None, "rule": verdict})
        if check is not None and check.targets:
            tick = time.time()
            ts, model, verdict = self.verified_choice(curve, rows, fit_part, ends, ts, verdict, check)
            t = ts[0]
            if stages:
                stages[-1].update(t=t, ensemble=sorted(ts) if len(ts) > 1 else None, rule=verdict)
            seconds["backdoor_check"] += time.time() - tick
        interior = 0.0 < t < 1.0 or (two_stages and t == 1.0)  # stage 2's t = 1 is stage 1's curve point
        refined, refine_record = cfg.refine_steps > 0 and interior, None
        if refined and check is not None and not check.targets:  # a refine could not be checked: leave it out
            refined, refine_record = False, {"accepted": False, "rejected_by": "no backdoor check (Neural Cleanse "
                                                                               "flags no label of the suspect)"}
        if refined:  # the validation slice has chosen t; now every budget image can train the chosen model
            # An ensemble is refined as one model: the loss is that of its averaged output.
            # Only inside the path: t = 0 is a suspect, and t = 1 is a suspect or an endpoint already trained
            # on the budget (refining the one-model scratch endpoint lowered development accuracy, docs/sanitizer.md).
            tick = time.time()
            if cfg.refine_guard:
                refine_record = self.refine_check(model, fit_part, val_part)
                refined = refine_record["accepted"]
            if refined:
                chosen, model = model, self.refine(model, budget)
                if check is not None and check.targets and verdict.get("backdoor_check"):
                    if check.check(model, fit_part.x, cfg.verify_threshold, what="refined")["carries"]:
                        model, refined = chosen, False  # the refine pulled the backdoor back: keep the curve's model
                        refine_record = {**(refine_record or {}), "accepted": False,
                                         "rejected_by": "backdoor check"}
            seconds["refine"] = time.time() - tick
        if check is not None:
            verdict["check"] = check.to_dict()
            if not check.targets:
                verdict["backdoor_check"] = None
                verdict["check_note"] = "Neural Cleanse flags no label of the suspect(s): nothing to check"
        return SanitizeResult(model=model, t=t, path=rows, curve=curve, seconds=seconds, second_endpoint=second,
                              second_model=made, refined=refined, refine_check=refine_record,
                              ensemble_ts=sorted(ts) if len(ts) > 1 else None, stages=stages,
                              unit_groups=None if groups is None else {
                                  "groups": len(groups.groups), "units": groups.units, "left_alone": groups.skipped},
                              verdict=verdict)


def _num_classes(model: nn.Module, part: CleanBudget) -> int:
    """The number of logits ``model`` returns (for a caller that did not say how many classes there are)."""
    with torch.no_grad():
        was = model.training
        model.eval()
        out = model(to_device(to_float(part.x[:2]), model_device(model)))
        model.train(was)
    return int(out.shape[1])


@REPAIRERS.register("mode-connectivity", SanitizerConfig,
                    "Mode-connectivity sanitizer (Zhao et al. 2020): a curve in weight space from the suspect, "
                    "exported at a point away from it.", two_models=True, learns_features=True, traces_path=True)
def sanitize_as_repairer(model: nn.Module, budget: CleanBudget, cfg: SanitizerConfig, *, progress: bool = True,
                         suspect_b: nn.Module | None = None, model_factory=None, test=None, backdoor=None,
                         num_classes: int | None = None, second_model: nn.Module | None = None,
                         artifacts: dict | None = None) -> tuple[nn.Module, dict]:
    """The repairer form of :class:`ModeConnectivitySanitizer`: the sanitized model and what the sanitizer chose
    (t, path, stages, verdict, ...). ``test``, ``backdoor``, ``num_classes`` and ``second_model`` are passed to
    :meth:`ModeConnectivitySanitizer.sanitize` (reporting the path on test data; reusing a second endpoint).

    ``artifacts``, a dict, receives what a run saves next to the model: ``curve_control`` (the trained control
    points by parameter name) and ``second_model`` (the endpoint made for t = 1, or None); the info stays
    JSON-able."""
    result = ModeConnectivitySanitizer(cfg, model_factory, progress=progress).sanitize(
        model, budget, suspect_b, test=test, backdoor=backdoor, num_classes=num_classes, second_model=second_model)
    if artifacts is not None:
        artifacts["curve_control"] = {k: v.detach().cpu().contiguous() for k, v in zip(result.curve.names,
                                                                                 result.curve.control)}
        artifacts["second_model"] = result.second_model
    return result.model, {"t": result.t, "ensemble": result.ensemble_ts, "second_endpoint": result.second_endpoint,
                          "path": result.path, "stages": result.stages, "refined": result.refined,
                          "refine_check": result.refine_check, "verdict": result.verdict,
                          "unit_groups": result.unit_groups,
                          "seconds": {k: round(v, 1) for k, v in result.seconds.items()}, "config": cfg.to_dict()}
