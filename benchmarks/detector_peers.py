"""Benchmark: our detectors against the Adversarial Robustness Toolbox (ART) 1.20.1 on the same models, training
sets and clean images: activation clustering, spectral signatures and STRIP.

ART is a benchmark-only dependency; install it without its declared dependencies (as for pgd_peers.py):

    pip install --no-deps adversarial-robustness-toolbox==1.20.1 six

    BACKDOORLAB_DATA=/work/shared/data OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/detector_peers.py \\
        --models bench-out/detector-stability/models/mnist-badnets-p0.1-s{1,2,3} --out bench-out/detector-peers
    python benchmarks/detector_peers.py --out bench-out/detector-peers --table

What each side gets, per model (its training set rebuilt from the sidecar, its 1,000-image clean budget):

- training-set detectors, ours with their defaults (the clean budget used) and ART's ``ActivationDefence`` and
  ``SpectralSignatureDefense`` with theirs. ART takes activations from the last of the model's top-level modules;
  on a backdoorlab model that is the classifier layer (logits), which is what a user wrapping the model gets
  ("ART, as wrapped"). The same detectors given our penultimate features (the model without its classifier
  layer) are "ART, penultimate". Precision and recall against the poisoned indices the sidecar records.
- STRIP: ours with its defaults (100 overlays added with saturation, as the authors' code does; threshold at 1%
  FRR on 500 budget images) and with ART's superimposition (a 0.5 blend); ART's ``STRIP`` with 100 overlays, its
  threshold fitted on the same 500 images with
  ``false_acceptance_rate=0.01`` (a normal fit, its rule), the model's softmax as the prediction function (ART
  takes the entropy of probabilities). FRR on held-out clean test images, detection rate on the same images
  triggered.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np
import torch

from backdoorlab import backdoor_of, checkpoint_clean_budget, load_checkpoint, load_dataset
from backdoorlab.detectors.activation_clustering import activation_clustering
from backdoorlab.detectors.poison_detection import (PoisonDetection, detection_metrics, penultimate_features,
                                                   poisoned_training_set)
from backdoorlab.detectors.spectral_signatures import spectral_signatures
from backdoorlab.detectors.strip import StripConfig, StripDetector
from backdoorlab.tensors import to_float
from common import machine, open_results


def metrics(flagged: np.ndarray, poisoned: np.ndarray, n: int) -> dict:
    """Precision and recall of flagged indices (ours or a peer's) against the recorded poison."""
    m = detection_metrics(PoisonDetection("flagged", np.zeros(n), np.asarray(flagged, dtype=np.int64)), poisoned, n)
    return {"precision": round(m["precision"], 4) if m["flagged"] else None, "recall": round(m["recall"], 4),
            "flagged": m["flagged"], "poisoned": m["poisoned"]}


def art_classifier(module: torch.nn.Module, input_shape, nb_classes: int):
    from art.estimators.classification import PyTorchClassifier

    return PyTorchClassifier(model=module, loss=torch.nn.CrossEntropyLoss(), input_shape=tuple(input_shape),
                             nb_classes=nb_classes, clip_values=(0.0, 1.0), device_type="cpu")


def without_classifier(model: torch.nn.Module) -> torch.nn.Module:
    """The model up to its penultimate features, as the one top-level module ART reads activations from."""
    class Features(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.model = model

        def forward(self, x):
            return self.model.forward_features(x)
    return torch.nn.Sequential(Features()).eval()


def art_training_set(model, x: np.ndarray, y: np.ndarray, nb_classes: int, penultimate: bool) -> dict:
    from art.defences.detector.poison import ActivationDefence, SpectralSignatureDefense

    module = without_classifier(model) if penultimate else model
    clf = art_classifier(module, x.shape[1:], nb_classes)
    onehot = np.eye(nb_classes, dtype=np.float32)[y]
    out = {}
    for name, make in (("activation clustering", lambda: ActivationDefence(clf, x, onehot)),
                       ("spectral signatures", lambda: SpectralSignatureDefense(clf, x, onehot))):
        tick = time.time()
        _, is_clean = make().detect_poison()
        flagged = np.nonzero(np.asarray(is_clean) == 0)[0]
        out[name] = {"flagged_indices": flagged, "seconds": round(time.time() - tick, 1)}
    return out


def art_strip(model, budget_x: torch.Tensor, clean_x: torch.Tensor, triggered_x: torch.Tensor, nb_classes: int,
              overlays: int, seed: int) -> dict:
    from art.defences.transformer.poisoning import STRIP

    probs = torch.nn.Sequential(model, torch.nn.Softmax(dim=1)).eval()
    clf = art_classifier(probs, budget_x.shape[1:], nb_classes)
    np.random.seed(seed)
    tick = time.time()
    defended = STRIP(clf)(num_samples=overlays, false_acceptance_rate=0.01)
    defended.mitigate(budget_x.numpy())

    def abstains(x):
        return float((np.asarray(defended.predict(x.numpy())).sum(axis=1) == 0).mean())
    r = {"frr": round(abstains(clean_x), 4), "detection_rate": round(abstains(triggered_x), 4)}
    r["seconds"] = round(time.time() - tick, 1)
    return r


def one_model(model_dir: str, ds_cache: dict, args) -> dict:
    model, meta = load_checkpoint(model_dir)
    name = meta["dataset"]
    if name not in ds_cache:
        ds_cache[name] = load_dataset(name, args.data_dir)
    ds = ds_cache[name]
    model.eval()
    budget = checkpoint_clean_budget(ds, meta, args.budget, args.budget_seed)
    data = poisoned_training_set(ds, meta)
    x, y, poisoned = to_float(data.x), np.asarray(data.y), np.asarray(data.poisoned)
    row = {"model": model_dir, "metrics": meta["metrics"]}
    tick = time.time()
    feats = penultimate_features(model, x)
    clean = penultimate_features(model, budget.x)
    feature_s = time.time() - tick
    for name_, run in (("activation clustering", lambda: activation_clustering(feats, y, clean, budget.y)),
                       ("spectral signatures", lambda: spectral_signatures(feats, y, clean, budget.y))):
        det = run()
        row[f"ours: {name_}"] = {**metrics(det.flagged, poisoned, len(y)), "seconds": round(det.seconds + feature_s, 1)}
    xs = x.numpy()
    for penultimate in (False, True):
        label = "ART, penultimate" if penultimate else "ART, as wrapped"
        for name_, r in art_training_set(model, xs, y, ds.num_classes, penultimate).items():
            row[f"{label}: {name_}"] = {**metrics(r["flagged_indices"], poisoned, len(y)), "seconds": r["seconds"]}
    # STRIP: held-out clean test images and the same images triggered
    pick = torch.randperm(len(ds.test_y), generator=torch.Generator().manual_seed(args.budget_seed))[:args.strip_test]
    tx, ty = to_float(ds.test_x[pick]), ds.test_y[pick]
    backdoor = backdoor_of(meta)
    keep = backdoor.eligible(ty)
    trig = backdoor.trigger.apply(tx[keep], training=False, generator=torch.Generator().manual_seed(0)).clamp(0, 1)
    for key, cfg in (("ours: STRIP", StripConfig(seed=args.budget_seed)),
                     ("ours (blend 0.5): STRIP", StripConfig(mode="blend", alpha=0.5, seed=args.budget_seed))):
        det = StripDetector(model, budget.x, cfg).fit(budget.x[:500])
        r = det.evaluate(tx, trig)
        row[key] = {"frr": round(r["frr"], 4), "detection_rate": round(r["detection_rate"], 4),
                    "seconds": round(det.seconds, 1)}
    row["ART: STRIP"] = art_strip(model, to_float(budget.x[:500]), tx, trig, ds.num_classes, 100, args.budget_seed)
    return row


def pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def table(results: dict) -> str:
    lines = [f"{results.get('machine')}; command: `{results.get('command')}`", "",
             "| model | detector | precision | recall | flagged | time |", "| --- | --- | --- | --- | --- | --- |"]
    for name, row in results.get("models", {}).items():
        for key, r in row.items():
            if isinstance(r, dict) and "recall" in r:
                lines.append(f"| {name} | {key} | {pct(r['precision'])} | {pct(r['recall'])} | {r['flagged']} | "
                             f"{r['seconds']:.0f} s |")
    lines += ["", "| model | STRIP | FRR (clean test) | detection rate | time |", "| --- | --- | --- | --- | --- |"]
    for name, row in results.get("models", {}).items():
        for key in ("ours: STRIP", "ours (blend 0.5): STRIP", "ART: STRIP"):
            if key in row:
                r = row[key]
                lines.append(f"| {name} | {key.split(':')[0]} | {pct(r['frr'])} | {pct(r['detection_rate'])} | "
                             f"{r['seconds']:.0f} s |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--models", nargs="+", default=[])
    ap.add_argument("--out", default="bench-out/detector-peers")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--budget", type=int, default=1000)
    ap.add_argument("--budget-seed", type=int, default=0)
    ap.add_argument("--strip-test", type=int, default=1000)
    ap.add_argument("--table", action="store_true")
    args = ap.parse_args()
    if args.table:
        print(table(json.loads((pathlib.Path(args.out) / "results.json").read_text())))
        return
    import art

    out, results, save = open_results(args.out)
    results.update(machine=machine(), art=art.__version__,
                   command="python benchmarks/detector_peers.py " + " ".join(sys.argv[1:]))
    results.setdefault("models", {})
    cache = {}
    for d in args.models:
        key = pathlib.Path(d).name
        if key in results["models"]:
            continue
        results["models"][key] = one_model(d, cache, args)
        save()
        print(key, json.dumps(results["models"][key]), flush=True)
    print(table(results))


if __name__ == "__main__":
    main()
