"""Activation clustering (Chen et al., "Detecting Backdoor Attacks on Deep Neural Networks by Activation
Clustering", 2018): per label, the penultimate-layer activations of the samples carrying that label are
reduced to 10 dimensions (PCA by default, or FastICA as in the paper) and split in two by k-means. Which cluster
is poisoned is decided by one of three analyses (``analysis``):

- ``"size"`` (the paper's relative-size analysis): the smaller cluster when its share of the label is below
  ``size_threshold`` (0.35).
- ``"silhouette"`` (the paper's silhouette analysis): the smaller cluster when the silhouette score of the
  2-means split is at least ``silhouette_threshold`` (0.15).
- ``"clean"`` (default when clean images are given; our variant, replacing the paper's exclusionary
  reclassification, which needs a retraining): the defender's clean budget images of the label are assigned
  to the nearer cluster; a cluster that holds a share ``s`` of the label's training samples but receives less
  than ``clean_ratio * s`` (0.2 * s) of the label's clean images is poisoned. This also works when the poisoned
  samples outnumber the clean ones in the target label (10% of MNIST poisoned into one label is about half of
  that label), where "the smaller cluster" is the clean one.

Why PCA by default, with FastICA as a fallback, and a boundary set by the clean images (``"clean"`` analysis;
measured across 24 fresh MNIST and Fashion-MNIST models, docs/detectors.md): FastICA whitens its components to
unit variance, so the one direction along which poisoned and clean samples are far apart weighs no more in the
2-means split than nine others; on some models the split then cut the target label into two halves of mixed
poison, found nothing, and gave no sign of it. PCA keeps the variances, and the poison's offset dominates when the
poison is a large part of the label. When it is a small part (1% of the training set, about 9% of the target
label), the top principal directions are the clean images' own variation and PCA's split misses it; FastICA,
which looks for non-Gaussian (here two-mode) directions, finds it. So a label whose PCA split is not flagged is
split again with ``fallback_reduction`` (FastICA). Once a label is flagged, the k-means midpoint is a poor
boundary (poisoned samples that the model embedded close to the clean ones fall on the clean side): with
``boundary="clean"`` a sample is flagged when its projection on the line from the label's clean images' mean to
the suspicious cluster's mean, in feature space, lies above the ``boundary_quantile`` (0.999) quantile of the
clean images' projections taken as normal.

Every result carries warnings for labels left unflagged that look poisoned by another measure (see
:func:`unflagged_label_warnings`).
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass
from statistics import NormalDist

import numpy as np
from tqdm.auto import tqdm

from ..config import Config, above, at_least, interval, option
from ..errors import BackdoorlabError, valid_names
from . import DETECTORS
from .poison_detection import PoisonDetection, _check

AC_ANALYSES = ("size", "silhouette", "clean")
AC_REDUCTIONS = ("ica", "pca")
AC_BOUNDARIES = ("kmeans", "clean")
INFLATION_RATIO = 1.25  # a label's training share this many times its clean share, ...
INFLATION_Z = 4.0  # ... and this many standard errors above it, is inflated (see inflated_labels)
SHORTFALL_RATIO = 0.5  # an unflagged cluster visited by clean images under half as often as its share ...
SHORTFALL_P = 1e-3  # ... and this unlikely by chance is worth a warning (see unflagged_label_warnings)


def _kmeans2(z: np.ndarray, seed: int, n_init: int = 10):
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=2, n_init=n_init, random_state=seed).fit(z)
    return km


def _silhouette(z: np.ndarray, assign: np.ndarray, seed: int, sample: int = 2000) -> float:
    from sklearn.metrics import silhouette_score

    if len(np.unique(assign)) < 2:
        return 0.0
    return float(silhouette_score(z, assign, sample_size=min(sample, len(z)), random_state=seed))


def _reducer(reduction: str, k: int, seed: int):
    from sklearn.decomposition import PCA, FastICA

    if reduction == "ica":
        return FastICA(n_components=k, random_state=seed, max_iter=400, tol=1e-3, whiten="unit-variance")
    return PCA(n_components=k, random_state=seed)


@dataclass
class ActivationClusteringConfig(Config):
    """The settings of :func:`activation_clustering` (see its docstring; ``analysis`` None: ``"clean"`` when
    clean images are given, else ``"size"``)."""

    analysis: str | None = option(None, choices=(None, *AC_ANALYSES))
    reduction: str = option("pca", choices=AC_REDUCTIONS)
    fallback_reduction: str | None = option("ica", choices=(None, *AC_REDUCTIONS))
    boundary: str = option("clean", choices=AC_BOUNDARIES)
    boundary_quantile: float = option(0.999, check=interval("(0, 1)"))
    n_components: int = option(10, check=at_least(1))
    size_threshold: float = option(0.35, check=interval("(0, 1)"))
    silhouette_threshold: float = 0.15
    clean_ratio: float = option(0.2, check=above(0))
    min_clean: int = 5
    seed: int = 0


class SplitFailed(ValueError):
    """A reduction that gives no usable split of a label's features (FastICA degenerates on some)."""


class _Split:
    """One label's 2-means split in a reduced space: the reducer, the k-means fit, the reduced samples."""

    def __init__(self, f: np.ndarray, reduction: str, k: int, seed: int):
        self.reduction = reduction
        self.red = _reducer(reduction, k, seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FastICA's convergence warnings: the split is what matters
            try:
                self.z = self.red.fit_transform(f)
            except ValueError as e:  # FastICA on some labels: a source of zero spread, then NaNs
                raise SplitFailed(f"{reduction}: {e}") from None
        if not np.isfinite(self.z).all():
            raise SplitFailed(f"{reduction}: the reduced features are not finite")
        self.km = _kmeans2(self.z, seed)
        self.assign = self.km.labels_
        self.sizes = np.bincount(self.assign, minlength=2)
        self.share = self.sizes / self.sizes.sum()

    def clean_ratios(self, cf: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Each cluster's share of the label's clean images, and that share over its share of the label."""
        cshare = np.bincount(self.km.predict(self.red.transform(cf)), minlength=2) / len(cf)
        return cshare, cshare / np.maximum(self.share, 1e-12)


def _clean_boundary(f: np.ndarray, cf: np.ndarray, in_suspicious: np.ndarray, quantile: float) -> np.ndarray:
    """Scores (> 1: flagged) of a flagged label's samples ``f``: the projection on the line from the clean
    images' mean to the suspicious cluster's mean, in feature space, in units of the ``quantile`` quantile of the
    clean images' projections taken as normal, measured from their mean."""
    center = cf.mean(0)
    d = f[in_suspicious].mean(0) - center
    d /= max(float(np.linalg.norm(d)), 1e-12)
    proj, cproj = (f - center) @ d, (cf - center) @ d
    spread = max(float(cproj.std(ddof=1)) * NormalDist().inv_cdf(quantile), 1e-12)
    return (proj - float(cproj.mean())) / spread


@DETECTORS.register("activation-clustering", ActivationClusteringConfig,
                    "Activation clustering (Chen et al. 2018): split each label's penultimate activations in two; "
                    "the cluster clean images avoid is poisoned.", level="training-set")
def activation_clustering(features, labels, clean_features=None, clean_labels=None, *, analysis: str | None = None,
                          reduction: str = "pca", fallback_reduction: str | None = "ica", boundary: str = "clean",
                          boundary_quantile: float = 0.999, n_components: int = 10, size_threshold: float = 0.35,
                          silhouette_threshold: float = 0.15, clean_ratio: float = 0.2, min_clean: int = 5,
                          seed: int = 0, progress: bool = False) -> PoisonDetection:
    """Activation clustering on penultimate ``features`` (N, D) with training ``labels`` (N,).

    ``clean_features`` / ``clean_labels`` (M, D) / (M,): the defender's clean images (the clean budget), needed
    by ``analysis="clean"`` (the default when given; ``"size"`` otherwise). Labels with fewer than
    ``min_clean`` clean images fall back to the size analysis. Under the clean analysis a label whose
    ``reduction`` split is not flagged is split again with ``fallback_reduction`` (None: no second split), and a
    flagged label's samples are flagged by ``boundary``: ``"clean"`` (see the module docstring) or ``"kmeans"``
    (the suspicious cluster, the paper's). See the module docstring for why.
    Per-sample score: with the clean boundary in a flagged label, the projection score (> 1: flagged); else,
    within a label, how much nearer the sample is to the suspicious cluster's centroid than to the other's,
    ``(d_other - d_susp) / (d_other + d_susp)`` in [-1, 1], plus 1 when the cluster is flagged (so flagged samples
    score above 1). ``warnings`` of the result: one line per label left unflagged that looks poisoned by
    another measure (:func:`unflagged_label_warnings`)."""
    f, y, cf, cy = _check(features, labels, clean_features, clean_labels)
    analysis = analysis or ("clean" if cf is not None else "size")
    for name, value, valid in (("analysis", analysis, AC_ANALYSES), ("reduction", reduction, AC_REDUCTIONS),
                               ("fallback reduction", fallback_reduction, (None, *AC_REDUCTIONS)),
                               ("boundary", boundary, AC_BOUNDARIES)):
        if value not in valid:
            none = " or None" if None in valid else ""
            raise BackdoorlabError(f"unknown activation-clustering {name} {value!r}; valid: "
                                   f"{valid_names(v for v in valid if v is not None)}{none}")
    if analysis == "clean" and cf is None:
        raise BackdoorlabError("activation clustering's 'clean' analysis needs clean features and labels")
    if not 0 < boundary_quantile < 1:
        raise BackdoorlabError(f"boundary quantile must lie in (0, 1), got {boundary_quantile}")

    tick = time.time()
    scores = np.full(len(y), -1.0)
    flagged, per_label = [], {}
    for lab in tqdm(np.unique(y), desc="activation clustering", disable=not progress, leave=False):
        idx = np.nonzero(y == lab)[0]
        if len(idx) < 4:
            per_label[str(int(lab))] = {"n": int(len(idx)), "skipped": "fewer than 4 samples"}
            continue
        k = min(n_components, f.shape[1], len(idx) - 1)
        cmask = cy == lab if cf is not None else None
        how = analysis if analysis != "clean" or cmask.sum() >= min_clean else "size"
        try:
            sp = _Split(f[idx], reduction, k, seed)
        except SplitFailed as e:
            raise BackdoorlabError(f"activation clustering: the {reduction} split of label {int(lab)} failed "
                                   f"({e}); try -o reduction=pca") from None
        info = {"n": int(len(idx))}
        susp, is_flagged = int(np.argmin(sp.sizes)), False
        if how == "clean":
            cshare, ratio = sp.clean_ratios(cf[cmask])
            if ratio.min() >= clean_ratio and fallback_reduction not in (None, reduction):
                try:
                    second = _Split(f[idx], fallback_reduction, k, seed)
                except SplitFailed as e:  # no second opinion on this label: the first split stands
                    second = None
                    info["fallback_failed"] = str(e)
                if second is not None:
                    cshare2, ratio2 = second.clean_ratios(cf[cmask])
                    if ratio2.min() < clean_ratio:
                        sp, cshare, ratio = second, cshare2, ratio2
            susp = int(np.argmin(ratio))
            is_flagged = bool(ratio[susp] < clean_ratio)
            info.update(clean_images=int(cmask.sum()), clean_share=[round(float(v), 4) for v in cshare],
                        clean_ratio=[round(float(v), 4) for v in ratio])
        sil = _silhouette(sp.z, sp.assign, seed)
        if how == "size":
            is_flagged = bool(sp.share[susp] < size_threshold)
        elif how == "silhouette":
            is_flagged = bool(sil >= silhouette_threshold)
        info.update(reduction=sp.reduction, cluster_sizes=sp.sizes.tolist(), silhouette=round(sil, 4),
                    suspicious_cluster_size=int(sp.sizes[susp]), flagged=is_flagged, analysis=how)
        if is_flagged and how == "clean" and boundary == "clean":
            s = _clean_boundary(f[idx], cf[cmask], sp.assign == susp, boundary_quantile)
            scores[idx] = s
            take = idx[s > 1]
            info["flagged_samples"] = int(len(take))
        else:
            d = np.linalg.norm(sp.z[:, None, :] - sp.km.cluster_centers_[None], axis=2)  # (n, 2)
            d_s, d_o = d[:, susp], d[:, 1 - susp]
            scores[idx] = (d_o - d_s) / np.maximum(d_o + d_s, 1e-12) + (1.0 if is_flagged else 0.0)
            take = idx[sp.assign == susp] if is_flagged else idx[:0]
        if is_flagged:
            flagged.append(take)
        per_label[str(int(lab))] = info
    flagged_idx = np.sort(np.concatenate(flagged)) if flagged else np.zeros(0, dtype=np.int64)
    warnings_ = unflagged_label_warnings(per_label, y, cy, clean_ratio, reduction, fallback_reduction)
    config = dict(analysis=analysis, reduction=reduction, fallback_reduction=fallback_reduction, boundary=boundary,
                  boundary_quantile=boundary_quantile, n_components=n_components, size_threshold=size_threshold,
                  silhouette_threshold=silhouette_threshold, clean_ratio=clean_ratio, min_clean=min_clean, seed=seed)
    return PoisonDetection("activation-clustering", scores, flagged_idx, per_label, config, time.time() - tick,
                           warnings_)


def inflated_labels(y: np.ndarray, clean_y: np.ndarray, min_ratio: float = INFLATION_RATIO,
                    min_z: float = INFLATION_Z) -> dict[int, tuple[float, float]]:
    """Labels that hold a larger share of the training set than of the clean images: ``{label: (training share,
    clean share)}`` where the training share is at least ``min_ratio`` times the clean share and ``min_z``
    binomial standard errors of the clean share above it. An all-to-one attack relabels images of every other
    label as its target, so the target grows (10% poisoned: about 19% of the training set against 10% of the
    clean images) whether or not its poisoned images form a cluster of their own."""
    out = {}
    m = len(clean_y)
    if m == 0:
        return out
    for lab in np.unique(y):
        train_share = float(np.mean(y == lab))
        clean_share = float(np.mean(clean_y == lab))
        se = max(np.sqrt(max(clean_share * (1 - clean_share), 1 / m) / m), 1e-12)
        if train_share >= min_ratio * clean_share and (train_share - clean_share) / se >= min_z:
            out[int(lab)] = (train_share, clean_share)
    return out


def _clean_deficit(info: dict) -> tuple[float, float, float]:
    """For the cluster the clean images visit least: the binomial probability of so few of them falling in it,
    were they spread like the label's training samples (1 when it is not under-visited by half), its ratio of
    clean share to share of the label, and its share of the label."""
    from scipy.stats import binom

    k = int(np.argmin(info["clean_ratio"]))
    ratio, share = info["clean_ratio"][k], info["cluster_sizes"][k] / info["n"]
    if ratio >= SHORTFALL_RATIO:
        return 1.0, ratio, share
    m = info["clean_images"]
    return float(binom.cdf(int(round(info["clean_share"][k] * m)), m, share)), ratio, share


def unflagged_label_warnings(per_label: dict, y: np.ndarray, clean_y: np.ndarray | None, clean_ratio: float,
                             reduction: str, fallback_reduction: str | None) -> list[str]:
    """One line for each label left unflagged that looks poisoned by another measure: it is inflated against
    the clean images (:func:`inflated_labels`), or the clean images visit one of its clusters less than half as
    often as its share of the label predicts, significantly (binomial p < 0.001), but not rarely enough to be
    flagged (``clean_ratio``). A lopsided split alone is no sign: on fresh models many clean labels split 70/30
    with their clean images spread the same way."""
    lines = []
    tried = " or ".join(dict.fromkeys(r for r in (reduction, fallback_reduction) if r))
    inflated = inflated_labels(y, clean_y) if clean_y is not None else {}
    for key, info in per_label.items():
        if info.get("flagged", True):
            continue
        lab = int(key)
        if lab in inflated:
            train_share, clean_share = inflated[lab]
            lines.append(f"label {lab} was not flagged, yet it holds {100 * train_share:.1f}% of the training set "
                         f"against {100 * clean_share:.1f}% of the clean images: images relabelled into it may not "
                         f"form a cluster of their own in the {tried} split (try spectral "
                         "signatures, or another n_components)")
        elif info.get("analysis") == "clean":
            p, ratio, share = _clean_deficit(info)
            if p < SHORTFALL_P:
                lines.append(f"label {lab} was not flagged, yet its cluster of {100 * share:.1f}% of the label "
                             f"received only {100 * ratio:.0f}% of its share of the clean images (flagged under "
                             f"{100 * clean_ratio:.0f}%): it may hold poison mixed with clean images")
    return lines
