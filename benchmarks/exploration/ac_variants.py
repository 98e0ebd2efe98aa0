"""Exploration: activation-clustering variants on the cached features of detector_stability.py's models.

For each model and each variant: precision / recall against the recorded poison, and how many non-target labels
were flagged (false alarms on clean labels). Variants:

- ``ica`` / ``pca``: the 2-means split after FastICA or PCA reduction, our clean-budget analysis;
- ``+calibrated``: once a label is flagged, the boundary moves from the k-means midpoint to the clean images'
  spread: a sample is flagged when its projection on the line from the clean cluster's centre to the suspicious
  one lies above the label's clean images' mean + z sd (z for a one-sided 0.999 quantile);
- ``both``: both reductions tried, the split whose suspicious cluster the clean images avoid most kept;
- ``+significant``: a cluster counts as avoided only when so few clean images falling in it is unlikely
  (binomial p < 0.001 at the cluster's share of the label).

    python benchmarks/exploration/ac_variants.py --features bench-out/detector-stability/features
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import warnings

import numpy as np
from scipy.stats import binom
from sklearn.cluster import KMeans
from sklearn.decomposition import PCA, FastICA

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from common import cached_detector_features  # noqa: E402

Z999 = 3.090232306167813


def split(f, cf, reduction, seed=0):
    k = 10
    red = (FastICA(n_components=k, random_state=seed, max_iter=400, tol=1e-3, whiten="unit-variance")
           if reduction == "ica" else PCA(n_components=k, random_state=seed))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        z = red.fit_transform(f)
    km = KMeans(n_clusters=2, n_init=10, random_state=seed).fit(z)
    cz = red.transform(cf)
    return z, cz, km


def judge(z, cz, km):
    share = np.bincount(km.labels_, minlength=2) / len(z)
    ca = km.predict(cz)
    cshare = np.bincount(ca, minlength=2) / len(cz)
    ratio = cshare / np.maximum(share, 1e-12)
    susp = int(np.argmin(ratio))
    p = binom.cdf(int((ca == susp).sum()), len(cz), share[susp])
    return susp, ratio[susp], p


def variant_flags(f, cf, reductions, calibrated, significant, z_cut=Z999, space="reduced", fallback=False):
    best = None
    for r in reductions:
        z, cz, km = split(f, cf, r)
        susp, ratio, p = judge(z, cz, km)
        if fallback:  # the first reduction that flags
            best = (z, cz, km, susp, ratio, p)
            if ratio < 0.2:
                break
            continue
        if best is None or ratio < best[4]:
            best = (z, cz, km, susp, ratio, p)
    z, cz, km, susp, ratio, p = best
    flagged = ratio < 0.2 and (not significant or p < 1e-3)
    if not flagged:
        return np.zeros(len(f), dtype=bool), False
    if not calibrated:
        return km.labels_ == susp, True
    if space == "full":  # the line from the clean images' mean to the suspicious cluster's, in feature space
        z, cz = f, cf
        c_s, c_o = f[km.labels_ == susp].mean(0), cf.mean(0)
    else:
        c_s, c_o = km.cluster_centers_[susp], km.cluster_centers_[1 - susp]
    d = (c_s - c_o) / np.linalg.norm(c_s - c_o)
    proj, cproj = (z - c_o) @ d, (cz - c_o) @ d
    cut = cproj.mean() + z_cut * cproj.std(ddof=1)
    return proj > cut, True


VARIANTS = {
    "pca+cal99": (("pca",), True, False, dict(z_cut=2.3263)),
    "pca+cal-full": (("pca",), True, False, dict(space="full")),
    "pca-else-ica+cal": (("pca", "ica"), True, False, dict(fallback=True)),
    "pca-else-ica+cal-full": (("pca", "ica"), True, False, dict(fallback=True, space="full")),
    "ica": (("ica",), False, False), "pca": (("pca",), False, False),
    "pca+calibrated": (("pca",), True, False), "pca+significant": (("pca",), False, True),
    "both": (("ica", "pca"), False, False), "both+calibrated": (("ica", "pca"), True, False),
    "both+calibrated+significant": (("ica", "pca"), True, True),
}


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--features", default="bench-out/detector-stability/features")
    ap.add_argument("--variants", nargs="+", default=list(VARIANTS))
    args = ap.parse_args()
    totals = {v: [0, 0, 0] for v in args.variants}  # models meeting, false label flags, models
    for path in sorted(pathlib.Path(args.features).glob("*.npz")):
        f = cached_detector_features(path)
        train, y, poisoned, clean, cy, truth = (f[k] for k in ("train", "y", "poisoned", "clean", "clean_y", "truth"))
        cells = []
        for v in args.variants:
            reductions, calibrated, significant, *extra = VARIANTS[v]
            pred = np.zeros(len(y), dtype=bool)
            false_labels = 0
            for lab in np.unique(y):
                idx = np.nonzero(y == lab)[0]
                flags, is_flagged = variant_flags(train[idx], clean[cy == lab], reductions, calibrated, significant,
                                                  **(extra[0] if extra else {}))
                pred[idx] = flags
                if is_flagged and lab != 0:
                    false_labels += 1
            tp = int((pred & truth).sum())
            prec = tp / pred.sum() if pred.sum() else float("nan")
            rec = tp / truth.sum()
            ok = rec >= 0.95 and prec >= 0.9
            totals[v][0] += ok
            totals[v][1] += false_labels
            totals[v][2] += 1
            cells.append(f"{v} {100 * prec:.1f}/{100 * rec:.1f}" + (f" fl{false_labels}" if false_labels else ""))
        print(path.stem, "|", " | ".join(cells), flush=True)
    for v, (ok, fl, n) in totals.items():
        print(f"{v}: {ok} of {n} models meet; {fl} clean labels flagged")
    sys.stdout.flush()


if __name__ == "__main__":
    main()
