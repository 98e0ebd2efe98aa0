"""Spectral signatures (Tran, Li, Madry, NeurIPS 2018): per label, centre the representations, take the
top right singular vector ``v``, score every sample by ``<r_i - mean, v>^2``. ``rule="paper"`` removes the
``1.5 * poison_fraction * n_label`` highest-scoring samples of every label (``poison_fraction``: an upper
bound on the poisoned fraction of a label). ``rule="clean"`` (default when clean images are given; our
variant) measures everything from the mean of the label's clean images instead: the singular vectors are those
of the label's representations minus that mean (when the poison is half of the label, the label's own mean sits
between the two groups and both score alike), and among the top ``n_directions`` (10) of them it keeps every
direction along which the label spreads more than ``spread_ratio`` (3) times as much as its clean images (at
least the one that spreads most; at a low poison rate the poison can lie along a later singular vector, the
first being the clean images' own variation, and poison made from many source images spreads over more than
one direction: docs/detectors.md). A sample's score is the sum over the kept directions of its squared
projection divided by the clean images' variance along it; samples above the ``clean_quantile`` (0.999)
quantile of a chi-square with as many degrees of freedom (the clean images' projections taken as normal) are
flagged. The directions are cross-fitted: found on one seeded half of the label and used on the other, chosen
on one half of the clean images with the variances from the other. Unlike the paper's rule it needs no bound
on the poisoned fraction of a label.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
from scipy.stats import chi2
from tqdm.auto import tqdm

from ..config import Config, above, at_least, interval, option
from ..errors import BackdoorlabError, valid_names
from . import DETECTORS
from .poison_detection import PoisonDetection, _check

SPECTRAL_RULES = ("paper", "clean")


@dataclass
class SpectralSignaturesConfig(Config):
    """The settings of :func:`spectral_signatures` (see its docstring; ``rule`` None: ``"clean"`` when clean
    images are given, else ``"paper"``)."""

    rule: str | None = option(None, choices=(None, *SPECTRAL_RULES))
    poison_fraction: float = option(0.1, check=interval("(0, 1)"))
    removal_factor: float = option(1.5, check=above(0))
    clean_quantile: float = option(0.999, check=interval("(0, 1)"))
    n_directions: int = option(10, check=at_least(1))
    spread_ratio: float = option(3.0, check=above(0))
    min_clean: int = 5
    seed: int = 0


@DETECTORS.register("spectral-signatures", SpectralSignaturesConfig,
                    "Spectral signatures (Tran et al. 2018): samples far out along a label's top singular "
                    "direction of penultimate features are poisoned.", level="training-set")
def spectral_signatures(features, labels, clean_features=None, clean_labels=None, *, rule: str | None = None,
                        poison_fraction: float = 0.1, removal_factor: float = 1.5, clean_quantile: float = 0.999,
                        n_directions: int = 10, spread_ratio: float = 3.0, min_clean: int = 5, seed: int = 0,
                        progress: bool = False
                        ) -> PoisonDetection:
    """Spectral signatures on penultimate ``features`` (N, D) with training ``labels`` (N,).

    ``rule="paper"`` (default without clean images): per label, centre on the label's mean, score
    ``<r - mean, v>^2`` with ``v`` the top right singular vector, remove the ``ceil(removal_factor *
    poison_fraction * n_label)`` highest scores. ``rule="clean"`` (default with ``clean_features`` /
    ``clean_labels``): see the module docstring; the top ``n_directions`` right singular vectors of the label's
    representations minus its clean images' mean, those along which the label spreads more than
    ``spread_ratio`` times as much as one seeded half of its clean images kept (at least one), scored by the
    squared projections over the other half's variances and flagged above the chi-square ``clean_quantile``
    quantile; cross-fitted over two seeded halves of the label. Labels with fewer than ``min_clean`` clean
    images use the paper's rule.
    Scores are divided by the label's cut-off score, so flagged samples score >= 1."""
    f, y, cf, cy = _check(features, labels, clean_features, clean_labels)
    rule = rule or ("clean" if cf is not None else "paper")
    if rule not in SPECTRAL_RULES:
        raise BackdoorlabError(f"unknown spectral-signature rule {rule!r}; valid: {valid_names(SPECTRAL_RULES)}")
    if rule == "clean" and cf is None:
        raise BackdoorlabError("the spectral-signature 'clean' rule needs clean features and labels")
    if not 0 < poison_fraction < 1 or removal_factor <= 0:
        raise BackdoorlabError(f"poison fraction must lie in (0, 1) and the removal factor be > 0, got "
                               f"{poison_fraction} and {removal_factor}")
    if not 0 < clean_quantile < 1:
        raise BackdoorlabError(f"clean quantile must lie in (0, 1), got {clean_quantile}")
    if n_directions < 1:
        raise BackdoorlabError(f"n_directions must be >= 1, got {n_directions}")
    if spread_ratio <= 0:
        raise BackdoorlabError(f"spread ratio must be > 0, got {spread_ratio}")
    tick = time.time()
    rng = np.random.default_rng(seed)
    scores = np.zeros(len(y))
    flagged, per_label = [], {}
    for lab in tqdm(np.unique(y), desc="spectral signatures", disable=not progress, leave=False):
        idx = np.nonzero(y == lab)[0]
        r = f[idx]
        how = rule
        cmask = cy == lab if cf is not None else None
        if rule == "clean" and cmask.sum() < min_clean:
            how = "paper"
        if how == "paper":
            # the direction of largest variance within the label, around the label's mean
            rc = r - r.mean(0)
            v = np.linalg.svd(rc, full_matrices=False)[2][0]
            s = (rc @ v) ** 2
            n_remove = min(len(idx), int(math.ceil(removal_factor * poison_fraction * len(idx))))
            order = np.argsort(-s, kind="stable")
            cut = s[order[n_remove - 1]] if n_remove > 0 else np.inf
            take = order[:n_remove]
            scores[idx] = s / max(float(cut), 1e-12)
        else:
            # cross-fitted: the direction comes from one half of the label and scores the other half, so that the
            # scored samples, like the clean images, are independent of it (a direction fitted on the samples it
            # scores overstates their spread along it, by (1 + sqrt(D / n))^2 for isotropic noise)
            cl = cf[cmask]
            m = len(cl)
            center = cl.mean(0)
            halves = np.array_split(rng.permutation(len(idx)), 2) if len(idx) >= 4 else [np.arange(len(idx))]
            pick_b = np.arange(m)
            if n_directions > 1 and m >= 2 * min_clean:
                pick_a, pick_b = np.array_split(rng.permutation(m), 2)
            else:
                pick_a = pick_b
            take, cuts, kept = [], [], []
            for h, part in enumerate(halves):
                fit_on = halves[1 - h] if len(halves) == 2 else part
                vt = np.linalg.svd(r[fit_on] - center, full_matrices=False)[2][:n_directions]
                spread = (((r[fit_on] - center) @ vt.T) ** 2).mean(0)
                # judged on one half of the clean images, the other half sets the variances: unbiased by the choice
                ratio = spread / np.maximum((((cl[pick_a] - center) @ vt.T) ** 2).mean(0), 1e-12)
                chosen = np.nonzero(ratio > spread_ratio)[0]
                if len(chosen) == 0:
                    chosen = np.array([int(np.argmax(ratio))])
                v = vt[chosen]
                # leave-one-out residuals of the clean images: x_j - mean_{-j} = m / (m - 1) (x_j - mean)
                var = np.maximum(((((cl[pick_b] - center) @ v.T) * (m / (m - 1))) ** 2).mean(0), 1e-12)
                s = ((((r[part] - center) @ v.T) ** 2) / var).sum(1)
                cut = float(chi2.ppf(clean_quantile, len(chosen)))
                scores[idx[part]] = s / cut
                take.append(part[s > cut])
                cuts.append(cut)
                kept.append(len(chosen))
            take = np.sort(np.concatenate(take))
            cut = float(np.mean(cuts))
        flagged.append(idx[take])
        per_label[str(int(lab))] = {"n": int(len(idx)), "flagged": int(len(take)), "rule": how,
                                    "cut_off": round(float(cut), 6)}
        if how == "clean":
            per_label[str(int(lab))]["directions"] = kept
    flagged_idx = np.sort(np.concatenate(flagged)) if flagged else np.zeros(0, dtype=np.int64)
    config = dict(rule=rule, poison_fraction=poison_fraction, removal_factor=removal_factor,
                  clean_quantile=clean_quantile, n_directions=n_directions, spread_ratio=spread_ratio,
                  min_clean=min_clean, seed=seed)
    return PoisonDetection("spectral-signatures", scores, flagged_idx, per_label, config, time.time() - tick)
