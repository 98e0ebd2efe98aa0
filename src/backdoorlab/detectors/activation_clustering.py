"""Activation clustering (Chen et al., "Detecting Backdoor Attacks on Deep Neural Networks by Activation
Clustering", 2018): per label, the penultimate-layer activations of the samples carrying that label are
reduced to 10 dimensions (FastICA, as in the paper, or PCA) and split in two by k-means. Which cluster is
poisoned is decided by one of three analyses (``analysis``):

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
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import numpy as np
from tqdm.auto import tqdm

from ..config import Config, above, at_least, interval, option
from ..errors import BackdoorlabError, valid_names
from . import DETECTORS
from .poison_detection import PoisonDetection, _check

AC_ANALYSES = ("size", "silhouette", "clean")
AC_REDUCTIONS = ("ica", "pca")


def _kmeans2(z: np.ndarray, seed: int, n_init: int = 10):
    from sklearn.cluster import KMeans

    km = KMeans(n_clusters=2, n_init=n_init, random_state=seed).fit(z)
    return km


def _silhouette(z: np.ndarray, assign: np.ndarray, seed: int, sample: int = 2000) -> float:
    from sklearn.metrics import silhouette_score

    if len(np.unique(assign)) < 2:
        return 0.0
    return float(silhouette_score(z, assign, sample_size=min(sample, len(z)), random_state=seed))


@dataclass
class ActivationClusteringConfig(Config):
    """The settings of :func:`activation_clustering` (see its docstring; ``analysis`` None: ``"clean"`` when
    clean images are given, else ``"size"``)."""

    analysis: str | None = option(None, choices=(None, *AC_ANALYSES))
    reduction: str = option("ica", choices=AC_REDUCTIONS)
    n_components: int = option(10, check=at_least(1))
    size_threshold: float = option(0.35, check=interval("(0, 1)"))
    silhouette_threshold: float = 0.15
    clean_ratio: float = option(0.2, check=above(0))
    min_clean: int = 5
    seed: int = 0


@DETECTORS.register("activation-clustering", ActivationClusteringConfig,
                    "Activation clustering (Chen et al. 2018): split each label's penultimate activations in two; "
                    "the cluster clean images avoid is poisoned.", level="training-set")
def activation_clustering(features, labels, clean_features=None, clean_labels=None, *, analysis: str | None = None,
                          reduction: str = "ica", n_components: int = 10, size_threshold: float = 0.35,
                          silhouette_threshold: float = 0.15, clean_ratio: float = 0.2, min_clean: int = 5,
                          seed: int = 0, progress: bool = False) -> PoisonDetection:
    """Activation clustering on penultimate ``features`` (N, D) with training ``labels`` (N,).

    ``clean_features`` / ``clean_labels`` (M, D) / (M,): the defender's clean images (the clean budget), needed
    by ``analysis="clean"`` (the default when given; ``"size"`` otherwise). Labels with fewer than
    ``min_clean`` clean images fall back to the size analysis. See the module docstring for the analyses.
    Per-sample score: within a label, how much nearer the sample is to the suspicious cluster's centroid than to
    the other's, ``(d_other - d_susp) / (d_other + d_susp)`` in [-1, 1], plus 1 when the cluster is flagged (so
    flagged samples score above 1)."""
    f, y, cf, cy = _check(features, labels, clean_features, clean_labels)
    analysis = analysis or ("clean" if cf is not None else "size")
    if analysis not in AC_ANALYSES:
        raise BackdoorlabError(f"unknown activation-clustering analysis {analysis!r}; valid: {valid_names(AC_ANALYSES)}")
    if reduction not in AC_REDUCTIONS:
        raise BackdoorlabError(f"unknown reduction {reduction!r}; valid: {valid_names(AC_REDUCTIONS)}")
    if analysis == "clean" and cf is None:
        raise BackdoorlabError("activation clustering's 'clean' analysis needs clean features and labels")
    from sklearn.decomposition import PCA, FastICA

    tick = time.time()
    scores = np.full(len(y), -1.0)
    flagged, per_label = [], {}
    for lab in tqdm(np.unique(y), desc="activation clustering", disable=not progress, leave=False):
        idx = np.nonzero(y == lab)[0]
        if len(idx) < 4:
            per_label[str(int(lab))] = {"n": int(len(idx)), "skipped": "fewer than 4 samples"}
            continue
        k = min(n_components, f.shape[1], len(idx) - 1)
        if reduction == "ica":
            red = FastICA(n_components=k, random_state=seed, max_iter=400, tol=1e-3, whiten="unit-variance")
        else:
            red = PCA(n_components=k, random_state=seed)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # FastICA's convergence warnings: the split is what matters
            z = red.fit_transform(f[idx])
        km = _kmeans2(z, seed)
        assign = km.labels_
        sizes = np.bincount(assign, minlength=2)
        small = int(np.argmin(sizes))
        share = sizes / sizes.sum()
        sil = _silhouette(z, assign, seed)
        info = {"n": int(len(idx)), "cluster_sizes": sizes.tolist(), "silhouette": round(sil, 4)}
        susp, is_flagged = small, False
        how = analysis
        if analysis == "clean":
            cmask = cy == lab
            if cmask.sum() >= min_clean:
                cz = red.transform(cf[cmask])
                cassign = km.predict(cz)
                cshare = np.bincount(cassign, minlength=2) / len(cassign)
                ratio = cshare / np.maximum(share, 1e-12)
                susp = int(np.argmin(ratio))
                is_flagged = bool(ratio[susp] < clean_ratio)
                info.update(clean_images=int(cmask.sum()), clean_share=[round(float(v), 4) for v in cshare],
                            clean_ratio=[round(float(v), 4) for v in ratio])
            else:
                how = "size"
        if how == "size":
            is_flagged = bool(share[small] < size_threshold)
        elif how == "silhouette":
            is_flagged = bool(sil >= silhouette_threshold)
        d = np.linalg.norm(z[:, None, :] - km.cluster_centers_[None], axis=2)  # (n, 2)
        d_s, d_o = d[:, susp], d[:, 1 - susp]
        scores[idx] = (d_o - d_s) / np.maximum(d_o + d_s, 1e-12) + (1.0 if is_flagged else 0.0)
        info.update(suspicious_cluster_size=int(sizes[susp]), flagged=is_flagged, analysis=how)
        if is_flagged:
            flagged.append(idx[assign == susp])
        per_label[str(int(lab))] = info
    flagged_idx = np.sort(np.concatenate(flagged)) if flagged else np.zeros(0, dtype=np.int64)
    config = dict(analysis=analysis, reduction=reduction, n_components=n_components, size_threshold=size_threshold,
                  silhouette_threshold=silhouette_threshold, clean_ratio=clean_ratio, min_clean=min_clean, seed=seed)
    return PoisonDetection("activation-clustering", scores, flagged_idx, per_label, config, time.time() - tick)
