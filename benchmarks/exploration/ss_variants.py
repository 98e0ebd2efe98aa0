"""Exploration: spectral-signature scoring variants on the cached features of detector_stability.py's models.

Per label, cross-fitted as the clean rule is (directions from one half of the label score the other half):

- ``one``: the clean rule (the one direction, among the top 10 singular vectors, along which the label spreads
  most relative to its clean images; threshold at the 0.999 quantile of the clean images' projections);
- ``k=K``: the K directions with the largest spread ratio; score = sum over them of the squared projection
  from the clean mean divided by the clean images' variance along it; threshold at the chi-square(K) 0.999
  quantile (directions judged on one half of the clean images, variances from the other half);
- ``ratio>R``: every direction among the top 10 whose spread ratio exceeds R, scored as above.

    python benchmarks/exploration/ss_variants.py --features bench-out/detector-stability/features
"""

from __future__ import annotations

import argparse
import pathlib
import sys

import numpy as np
from scipy.stats import chi2

from backdoorlab.detectors.spectral_signatures import spectral_signatures

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from common import cached_detector_features  # noqa: E402


def multi_direction(f, cf, rng, pick, n_directions=10, q=0.999, basis="label"):
    n, m = len(f), len(cf)
    halves = np.array_split(rng.permutation(n), 2)
    pick_a, pick_b = np.array_split(rng.permutation(m), 2)
    center = cf.mean(0)
    flags = np.zeros(n, dtype=bool)
    for h, part in enumerate(halves):
        rf = f[halves[1 - h]]
        origin = rf.mean(0) if basis == "label" else center
        vt = np.linalg.svd(rf - origin, full_matrices=False)[2][:n_directions]
        clean_a = (((cf[pick_a] - center) @ vt.T) ** 2).mean(0)
        ratio = (((rf - center) @ vt.T) ** 2).mean(0) / np.maximum(clean_a, 1e-12)
        chosen = pick(ratio)
        v = vt[chosen]
        var = (((cf[pick_b] - center) @ v.T) * (m / (m - 1))) ** 2
        var = var.mean(0)
        s = ((((f[part] - center) @ v.T) ** 2) / np.maximum(var, 1e-12)).sum(1)
        flags[part] = s > chi2.ppf(q, len(chosen))
    return flags


def variants():
    out = {}
    out["ratio>3"] = (lambda ratio: np.nonzero(ratio > 3)[0] if (ratio > 3).any() else np.argsort(-ratio)[:1], {})
    out["k=1 q.99"] = (lambda ratio: np.argsort(-ratio)[:1], dict(q=0.99))
    out["clean-basis k=1"] = (lambda ratio: np.argsort(-ratio)[:1], dict(basis="clean"))
    out["clean-basis ratio>3"] = (lambda ratio: np.nonzero(ratio > 3)[0] if (ratio > 3).any() else np.argsort(-ratio)[:1],
                                  dict(basis="clean"))
    out["clean-basis ratio>3 q.9999"] = (lambda ratio: np.nonzero(ratio > 3)[0] if (ratio > 3).any()
                                         else np.argsort(-ratio)[:1], dict(basis="clean", q=0.9999))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--features", default="bench-out/detector-stability/features")
    args = ap.parse_args()
    picks = variants()
    totals = {v: 0 for v in ["one", *picks]}
    n_models = 0
    for path in sorted(pathlib.Path(args.features).glob("*.npz")):
        f = cached_detector_features(path)
        train, y, poisoned, clean, cy, truth = (f[k] for k in ("train", "y", "poisoned", "clean", "clean_y", "truth"))
        cells = []
        det = spectral_signatures(train, y, clean, cy)
        preds = {"one": np.isin(np.arange(len(y)), det.flagged)}
        for name, (pick, kw) in picks.items():
            rng = np.random.default_rng(0)
            pred = np.zeros(len(y), dtype=bool)
            for lab in np.unique(y):
                idx = np.nonzero(y == lab)[0]
                pred[idx] = multi_direction(train[idx], clean[cy == lab], rng, pick, **kw)
            preds[name] = pred
        for name, pred in preds.items():
            tp = int((pred & truth).sum())
            prec = tp / pred.sum() if pred.sum() else float("nan")
            rec = tp / truth.sum()
            totals[name] += rec >= 0.95 and prec >= 0.9
            cells.append(f"{name} {100 * prec:.1f}/{100 * rec:.1f} ({int(pred[~truth].sum())} fp)")
        n_models += 1
        print(path.stem, "|", " | ".join(cells), flush=True)
    for name, ok in totals.items():
        print(f"{name}: {ok} of {n_models} models meet")


if __name__ == "__main__":
    main()
