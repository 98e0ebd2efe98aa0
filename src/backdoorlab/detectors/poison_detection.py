"""Training-set level detectors: find the poisoned samples of a training set from a model trained on it.

- **Activation clustering** (Chen et al., "Detecting Backdoor Attacks on Deep Neural Networks by Activation
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

- **Spectral signatures** (Tran, Li, Madry, NeurIPS 2018): per label, centre the representations, take the
  top right singular vector ``v``, score every sample by ``<r_i - mean, v>^2``. ``rule="paper"`` removes the
  ``1.5 * poison_fraction * n_label`` highest-scoring samples of every label (``poison_fraction``: an upper
  bound on the poisoned fraction of a label). ``rule="clean"`` (default when clean images are given; our
  variant): the projection is measured from the mean of the label's clean images (when the poison is half of
  the label, the label's own mean sits between the two groups and both score alike); ``v`` is, among the top
  ``n_directions`` (10) singular vectors, the one along which the label spreads most relative to its clean
  images (at a 1% poison rate on MNIST the poison lies along the *second* singular vector of label 0, the
  first is the clean zeros' own variation), found on one seeded half of the label and used on the other, and
  judged on one half of the clean images; the samples scoring above the ``clean_quantile`` (0.999) quantile of
  the other half of the clean images' (leave-one-out) scores,
  taken as normal (a chi-square(1) quantile times their mean square: with a hundred clean images per label an
  empirical 99th percentile is too noisy), are flagged. Unlike the paper's rule it needs no bound on the
  poisoned fraction of a label.

Scores are comparable across labels (divided by the label's threshold, so > 1 means flagged where the rule
is a threshold), which makes one ROC AUC over the whole training set meaningful. :func:`detection_metrics`
gives precision, recall and AUC against the recorded poisoned indices; :func:`poisoned_training_set` rebuilds
them from a checkpoint's provenance. Neither detector sees the trigger or the poisoned indices.
"""

from __future__ import annotations

import math
import time
import warnings
from statistics import NormalDist
from dataclasses import dataclass, field

import numpy as np
import torch
from torch import nn
from tqdm.auto import tqdm

from ..config import Config, option
from ..errors import BackdoorlabError, valid_names
from ..tensors import to_float
from . import DETECTORS

AC_ANALYSES = ("size", "silhouette", "clean")
AC_REDUCTIONS = ("ica", "pca")
SPECTRAL_RULES = ("paper", "clean")


@torch.no_grad()
def penultimate_features(model: nn.Module, x: torch.Tensor, batch_size: int = 500, progress: bool = False
                         ) -> torch.Tensor:
    """Penultimate-layer activations (N, D) of uint8 or float images ``x`` (N, C, H, W), model in eval mode.

    Uses ``model.forward_features`` when the model has it (every backdoorlab architecture); otherwise the input
    of the model's last ``nn.Linear`` module, caught by a forward hook."""
    was_training = model.training
    model.eval()
    out = []
    if hasattr(model, "forward_features"):
        run = model.forward_features
        handle = None
    else:
        linears = [m for m in model.modules() if isinstance(m, nn.Linear)]
        if not linears:
            raise BackdoorlabError("the model has neither forward_features nor an nn.Linear layer to take "
                                   "penultimate features from")
        caught = []
        handle = linears[-1].register_forward_hook(lambda mod, inp, outp: caught.append(inp[0].flatten(1)))

        def run(xb):
            caught.clear()
            model(xb)
            return caught[-1]
    try:
        for i in tqdm(range(0, len(x), batch_size), desc="features", disable=not progress, leave=False):
            out.append(run(to_float(x[i:i + batch_size])).flatten(1).float())
    finally:
        if handle is not None:
            handle.remove()
        model.train(was_training)
    return torch.cat(out) if out else torch.empty(0)


@dataclass
class PoisonDetection:
    """Per-sample scores (N,) (larger = more suspicious; > 1 means flagged under threshold rules), the flagged
    indices, and per-label details."""

    method: str
    scores: np.ndarray
    flagged: np.ndarray  # sorted indices into the training set
    per_label: dict = field(default_factory=dict)
    config: dict = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> dict:
        return {"method": self.method, "flagged": int(len(self.flagged)), "config": self.config,
                "per_label": self.per_label, "seconds": round(self.seconds, 2)}


def _check(features, labels, clean_features, clean_labels):
    f = torch.as_tensor(features).float()
    y = torch.as_tensor(labels).long()
    if f.dim() != 2 or y.dim() != 1 or len(f) != len(y) or len(y) == 0:
        raise BackdoorlabError(f"features must be (N, D) and labels (N,) with N > 0, got {tuple(f.shape)} and "
                               f"{tuple(y.shape)}")
    if (clean_features is None) != (clean_labels is None):
        raise BackdoorlabError("give both clean features and clean labels, or neither")
    if clean_features is not None:
        cf = torch.as_tensor(clean_features).float()
        cy = torch.as_tensor(clean_labels).long()
        if cf.dim() != 2 or cf.shape[1] != f.shape[1] or len(cf) != len(cy):
            raise BackdoorlabError(f"clean features must be (M, {f.shape[1]}) with M labels, got {tuple(cf.shape)}")
        return f.numpy().astype(np.float64), y.numpy(), cf.numpy().astype(np.float64), cy.numpy()
    return f.numpy().astype(np.float64), y.numpy(), None, None


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
    n_components: int = option(10, check=(lambda v: v >= 1, ">= 1"))
    size_threshold: float = option(0.35, check=(lambda v: 0 < v < 1, "in (0, 1)"))
    silhouette_threshold: float = 0.15
    clean_ratio: float = option(0.2, check=(lambda v: v > 0, "> 0"))
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


@dataclass
class SpectralSignaturesConfig(Config):
    """The settings of :func:`spectral_signatures` (see its docstring; ``rule`` None: ``"clean"`` when clean
    images are given, else ``"paper"``)."""

    rule: str | None = option(None, choices=(None, *SPECTRAL_RULES))
    poison_fraction: float = option(0.1, check=(lambda v: 0 < v < 1, "in (0, 1)"))
    removal_factor: float = option(1.5, check=(lambda v: v > 0, "> 0"))
    clean_quantile: float = option(0.999, check=(lambda v: 0 < v < 1, "in (0, 1)"))
    n_directions: int = option(10, check=(lambda v: v >= 1, ">= 1"))
    min_clean: int = 5
    seed: int = 0


@DETECTORS.register("spectral-signatures", SpectralSignaturesConfig,
                    "Spectral signatures (Tran et al. 2018): samples far out along a label's top singular "
                    "direction of penultimate features are poisoned.", level="training-set")
def spectral_signatures(features, labels, clean_features=None, clean_labels=None, *, rule: str | None = None,
                        poison_fraction: float = 0.1, removal_factor: float = 1.5, clean_quantile: float = 0.999,
                        n_directions: int = 10, min_clean: int = 5, seed: int = 0, progress: bool = False
                        ) -> PoisonDetection:
    """Spectral signatures on penultimate ``features`` (N, D) with training ``labels`` (N,).

    ``rule="paper"`` (default without clean images): per label, centre on the label's mean, score
    ``<r - mean, v>^2`` with ``v`` the top right singular vector, remove the ``ceil(removal_factor *
    poison_fraction * n_label)`` highest scores. ``rule="clean"`` (default with ``clean_features`` /
    ``clean_labels``): score ``<r - clean mean, v>^2`` and flag scores above the ``clean_quantile`` quantile of
    the clean images' leave-one-out projections taken as normal (``chi2_1.ppf(q) * mean square``), with ``v``
    cross-fitted (found on a seeded half of the label's samples, used on the other half) and chosen among the
    top ``n_directions`` right singular vectors as the one along which the label's samples spread most relative
    to one seeded half of its clean images (the other half sets the threshold; 1: the paper's top vector, all
    clean images set the threshold); labels with fewer than ``min_clean`` clean images use the
    paper's rule.
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
            z2 = NormalDist().inv_cdf((1 + clean_quantile) / 2) ** 2  # chi-square(1) quantile
            center = cl.mean(0)
            halves = np.array_split(rng.permutation(len(idx)), 2) if len(idx) >= 4 else [np.arange(len(idx))]
            pick_b = np.arange(m)
            if n_directions > 1 and m >= 2 * min_clean:
                pick_a, pick_b = np.array_split(rng.permutation(m), 2)
            else:
                pick_a = pick_b
            take, cuts = [], []
            for h, part in enumerate(halves):
                fit_on = halves[1 - h] if len(halves) == 2 else part
                rf = r[fit_on]
                vt = np.linalg.svd(rf - rf.mean(0), full_matrices=False)[2][:n_directions]
                v = vt[0]
                if len(vt) > 1:
                    # among the top principal directions, the one along which the label departs most from its
                    # clean images, judged on one half of them (the other half sets the threshold, unbiased by
                    # the choice)
                    clean_ms = (((cl[pick_a] - center) @ vt.T) ** 2).mean(0)
                    v = vt[int(np.argmax((((rf - center) @ vt.T) ** 2).mean(0) / np.maximum(clean_ms, 1e-12)))]
                s = ((r[part] - center) @ v) ** 2
                # leave-one-out residuals of the clean images: x_j - mean_{-j} = m / (m - 1) (x_j - mean)
                cs = ((cl[pick_b] - center) @ v * (m / (m - 1))) ** 2
                cut = max(float(cs.mean()) * z2, 1e-12)
                scores[idx[part]] = s / cut
                take.append(part[s > cut])
                cuts.append(cut)
            take = np.sort(np.concatenate(take))
            cut = float(np.mean(cuts))
        flagged.append(idx[take])
        per_label[str(int(lab))] = {"n": int(len(idx)), "flagged": int(len(take)), "rule": how,
                                    "cut_off": round(float(cut), 6)}
    flagged_idx = np.sort(np.concatenate(flagged)) if flagged else np.zeros(0, dtype=np.int64)
    config = dict(rule=rule, poison_fraction=poison_fraction, removal_factor=removal_factor,
                  clean_quantile=clean_quantile, n_directions=n_directions, min_clean=min_clean, seed=seed)
    return PoisonDetection("spectral-signatures", scores, flagged_idx, per_label, config, time.time() - tick)


def roc_auc(scores, positive) -> float:
    """ROC AUC of ``scores`` (larger = positive) for boolean ``positive`` (ties count half); nan when one class
    is empty."""
    s = np.asarray(scores, dtype=np.float64)
    pos = np.asarray(positive, dtype=bool)
    n_pos, n_neg = int(pos.sum()), int((~pos).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(pos, s))


def detection_metrics(detection: PoisonDetection, poisoned_indices, n: int | None = None) -> dict:
    """Precision, recall (and F1) of ``detection.flagged`` and ROC AUC of ``detection.scores`` against the true
    ``poisoned_indices`` of a training set of ``n`` samples (default: the number of scores)."""
    n = len(detection.scores) if n is None else n
    truth = np.zeros(n, dtype=bool)
    truth[np.asarray(poisoned_indices, dtype=np.int64)] = True
    pred = np.zeros(n, dtype=bool)
    pred[detection.flagged] = True
    tp = int((truth & pred).sum())
    precision = tp / pred.sum() if pred.sum() else float("nan")
    recall = tp / truth.sum() if truth.sum() else float("nan")
    f1 = 2 * precision * recall / (precision + recall) if tp else 0.0
    return {"precision": precision, "recall": recall, "f1": f1, "auc": roc_auc(detection.scores, truth),
            "flagged": int(pred.sum()), "poisoned": int(truth.sum()), "true_positives": tp}


def poisoned_training_set(dataset, meta: dict):
    """Rebuild the poisoned training set a checkpoint was trained on from its provenance (attack + poison seed):
    ``budget.training_part`` with the checkpoint's held-out pool, poisoned as in ``pipeline.train_run``.
    Returns a ``PoisonedData`` (x, y, poisoned indices); raises when the checkpoint records no data poisoning."""
    from ..attacks import PoisoningAttack, backdoor_from_dict
    from ..budget import training_part
    from ..models.sidecar import holdout_size, provenance

    prov = provenance(meta)
    attack = prov.get("attack")
    if not attack or "poison_rate" not in attack or "poison_seed" not in prov:
        name = (attack or {}).get("name", "none")
        raise BackdoorlabError(f"the checkpoint records no data-poisoning attack (attack: {name}); training-set "
                               "detectors need the poisoned training set")
    holdout = holdout_size(meta, dataset.name)
    x, y = training_part(dataset, holdout)
    atk = PoisoningAttack(attack.get("name", "poisoning"), backdoor_from_dict(attack), attack["poison_rate"],
                          attack.get("stamp", "data"))
    data = atk.poison(x, y, dataset.num_classes, seed=int(prov["poison_seed"]))
    if "poisoned" in prov and int(prov["poisoned"]) != len(data.poisoned):
        raise BackdoorlabError(f"rebuilt {len(data.poisoned)} poisoned images but the checkpoint records "
                               f"{prov['poisoned']}")
    return data
