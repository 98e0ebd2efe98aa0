"""Benchmark: the detectors on the attacks benchmark's models (clean + every backdoored one).

- Neural Cleanse (through ``scan_run``, report under OUT/scan-NAME/): flagged?, suspected target vs the planted
  one, anomaly index, wall time.
- STRIP: threshold at 1% FRR from the clean budget; FRR on held-out clean test images, FAR / detection rate and
  ROC AUC on triggered test images (models with a trigger).
- Activation clustering and spectral signatures (models trained on poisoned data): precision, recall and ROC AUC
  against the poisoned indices rebuilt from the checkpoint's provenance, with our default rules (which use the
  clean budget) and with the papers' rules.

Every detector gets the same clean budget (``--budget`` images, seed ``--budget-seed``) from the checkpoint's
held-out pool; none reads the trigger (it is used only to make the triggered test images STRIP is scored on).
Results go to OUT/results.json after every step; a rerun skips what is done.

    python benchmarks/detectors_benchmark.py --dataset mnist --models bench-out/attacks-mnist \\
        --out bench-out/detectors [--extra-rates 0.01]
    python benchmarks/detectors_benchmark.py --table bench-out/detectors/results.json
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import torch

from backdoorlab.attacks import make_poisoning_attack
from backdoorlab import checkpoint_clean_budget
from backdoorlab.data import load_dataset
from backdoorlab.detectors.activation_clustering import activation_clustering
from backdoorlab.detectors.poison_detection import (detection_metrics, penultimate_features, poisoned_training_set,
                                                   records_poisoning)
from backdoorlab.detectors.spectral_signatures import spectral_signatures
from backdoorlab.detectors.strip import StripConfig, StripDetector
from backdoorlab.models.sidecar import planted_attack
from backdoorlab.attacks import backdoor_of
from backdoorlab.models import load_for
from backdoorlab.runs import train_defaults, train_run
from backdoorlab.runs import scan_run
from backdoorlab.tensors import to_float
from backdoorlab.train import TrainConfig
from common import machine, open_results

ORDER = ("clean", "badnets", "blended", "dynamic", "weight-perturbation", "fault-injection", "single-bias",
         "triggerless", "dynamic-3-targets", "badnets-all-to-all", "blended-all-to-all", "dynamic-all-to-all")


def planted_targets(meta: dict):
    """The planted all-to-one target label(s), 'all-to-all', or None (clean model)."""
    attack = planted_attack(meta)
    if not attack:
        return None
    if attack.get("kind") == "multi":
        return [p["target"] for p in attack["parts"]]
    if attack.get("mode") == "all-to-all":
        return "all-to-all"
    if attack.get("kind") == "fault":  # chosen test images flipped to chosen labels
        return f"per-image ({', '.join(map(str, sorted(set(attack['targets']))))})"
    return [attack["target"]] if "target" in attack else None


def strip_eval(model, meta, ds, budget, n_test: int, seed: int, progress: bool) -> dict:
    backdoor = backdoor_of(meta)
    pick = torch.randperm(len(ds.test_y), generator=torch.Generator().manual_seed(seed))[:n_test]
    tx, ty = ds.test_x[pick], ds.test_y[pick]
    det = StripDetector(model, budget.x, StripConfig(seed=seed), progress=progress).fit(budget.x[:500])
    triggered = None
    parts = getattr(backdoor, "parts", None) if backdoor is not None else None
    if parts and all(hasattr(p, "trigger") for p in parts):
        chunks = []
        for i, p in enumerate(parts):  # a multi-target backdoor: each part triggers its share of the images
            xs, ys = tx[i::len(parts)], ty[i::len(parts)]
            keep = p.eligible(ys)
            chunks.append(p.trigger.apply(to_float(xs[keep])))
        triggered = torch.cat(chunks)
    r = det.evaluate(tx, triggered)
    r["seconds"] = round(det.seconds, 1)
    return r


def poison_eval(model, meta, ds, budget, progress: bool) -> dict:
    data = poisoned_training_set(ds, meta)
    tick = time.time()
    feats = penultimate_features(model, data.x, progress=progress)
    clean = penultimate_features(model, budget.x)
    feat_s = time.time() - tick
    poison_rate = planted_attack(meta)["poison_rate"]
    # the paper's epsilon bounds the poisoned share of a label; an all-to-one attack concentrates the poison in the
    # target label, so the overall rate understates it. The oracle row gives the rule the true largest share.
    y = torch.as_tensor(data.y)
    hit = torch.bincount(y[torch.as_tensor(data.poisoned, dtype=torch.long)], minlength=ds.num_classes).float()
    eps = float((hit / torch.bincount(y, minlength=ds.num_classes).clamp(min=1).float()).max())
    runs = {
        "AC (clean-budget analysis)": lambda: activation_clustering(feats, data.y, clean, budget.y),
        "AC (paper: relative size < 0.35)": lambda: activation_clustering(feats, data.y, analysis="size"),
        "AC (paper: silhouette >= 0.15)": lambda: activation_clustering(feats, data.y, analysis="silhouette"),
        "spectral (clean-budget rule)": lambda: spectral_signatures(feats, data.y, clean, budget.y),
        f"spectral (paper: 1.5 x {poison_rate:g} per label)": lambda: spectral_signatures(
            feats, data.y, rule="paper", poison_fraction=poison_rate),
        f"spectral (paper, oracle: 1.5 x {eps:.2f}, the largest poisoned share of a label)": lambda: spectral_signatures(
            feats, data.y, rule="paper", poison_fraction=min(eps, 0.66)),
    }
    out = {}
    for name, run in runs.items():
        det = run()
        m = detection_metrics(det, data.poisoned)
        out[name] = {**{k: (round(float(v), 4) if isinstance(v, float) else v) for k, v in m.items()},
                     "seconds": round(det.seconds + feat_s, 1)}
    return out


def pct(v) -> str:
    return "-" if v is None or v != v else f"{100 * v:.1f}%"


def num(v) -> str:
    return "-" if v is None or v != v else f"{v:.3f}"


def table(results: dict) -> str:
    lines = [f"Data set {results.get('dataset')}, clean budget {results.get('budget')} images (seed "
             f"{results.get('budget_seed')}); {results.get('machine')}; command: `{results.get('command')}`", "",
             "Neural Cleanse (flag when the smallest label's anomaly index > 2):", "",
             "| model | planted target | flagged | suspected target | anomaly index | min / median mask L1 | time |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    models = results.get("models", {})
    for name, r in models.items():
        nc = r.get("nc")
        if not nc:
            continue
        planted = r["planted"]
        planted = "none" if planted is None else (", ".join(map(str, planted)) if isinstance(planted, list) else planted)
        norms = sorted(nc["l1_norms"])
        lines.append(f"| {name} | {planted} | {'yes' if nc['backdoored'] else 'no'} | "
                     f"{'-' if nc['suspected_target'] is None else nc['suspected_target']} | {nc['anomaly_index']:.2f} | "
                     f"{norms[0]:.1f} / {(norms[len(norms) // 2 - 1] + norms[len(norms) // 2]) / 2:.1f} | "
                     f"{nc['seconds']['neural_cleanse']:.0f} s |")
    lines += ["", "STRIP (100 overlays, threshold at 1% FRR on 500 clean budget images; held-out clean and triggered "
              "test images):", "", "| model | FRR (clean test) | FAR (triggered) | detection rate | AUC | time |",
              "| --- | --- | --- | --- | --- | --- |"]
    for name, r in models.items():
        s = r.get("strip")
        if s:
            lines.append(f"| {name} | {pct(s['frr'])} | {pct(s.get('far'))} | {pct(s.get('detection_rate'))} | "
                         f"{num(s.get('auc'))} | {s['seconds']:.0f} s |")
    lines += ["", "Training-set detectors (poisoned indices rebuilt from the checkpoint's provenance; time includes the "
              "features of the training set):", "",
              "| model | detector | precision | recall | AUC | flagged / poisoned | time |",
              "| --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in models.items():
        for det, m in (r.get("poison") or {}).items():
            lines.append(f"| {name} | {det} | {pct(m['precision'])} | {pct(m['recall'])} | "
                         f"{num(m['auc'])} | {m['flagged']} / {m['poisoned']} | "
                         f"{m['seconds']:.0f} s |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--models", default="bench-out/attacks-mnist", help="the attacks benchmark's output directory")
    ap.add_argument("--out", default="bench-out/detectors")
    ap.add_argument("--only", nargs="+", default=None, help="model names (default: all of ORDER that exist)")
    ap.add_argument("--budget", type=int, default=1000)
    ap.add_argument("--budget-seed", type=int, default=0)
    ap.add_argument("--strip-test", type=int, default=300, help="held-out clean test images for STRIP")
    ap.add_argument("--skip", nargs="*", default=[], choices=["nc", "strip", "poison"])
    ap.add_argument("--extra-rates", type=float, nargs="*", default=[],
                    help="also train BadNets models at these poison rates (OUT/extra-models/badnets-pRATE, the attacks "
                         "benchmark's recipe and seed) and evaluate them: at 1%% the poison is about 9%% of the "
                         "target label, the regime the training-set detectors' papers assume")
    ap.add_argument("--arch", default="small-cnn", help="architecture of the extra models")
    ap.add_argument("--seed", type=int, default=1, help="seed of the extra models (the attacks benchmark's)")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--table", help="print the table of a results.json and exit")
    args = ap.parse_args()
    if args.table:
        print(table(json.loads(pathlib.Path(args.table).read_text())))
        return
    out, results, save = open_results(args.out)
    results.update(dataset=args.dataset, budget=args.budget, budget_seed=args.budget_seed, machine=machine(),
                   command="python benchmarks/detectors_benchmark.py " + " ".join(sys.argv[1:]))
    results.setdefault("models", {})
    ds = load_dataset(args.dataset, args.data_dir)
    root = pathlib.Path(args.models)
    dirs = {n: root / n for n in (args.only or [n for n in ORDER if (root / n / "model.json").exists()])}
    for rate in args.extra_rates:
        d = out / "extra-models" / f"badnets-p{rate:g}"
        if not (d / "model.json").exists():
            attack = make_poisoning_attack("badnets", target=0, poison_rate=rate)
            cfg = TrainConfig(seed=args.seed, **train_defaults(args.dataset, args.arch))
            _, meta = train_run(ds, args.arch, cfg, attack, out=str(d), progress=args.progress, desc=d.name)
            print(f"trained {d.name}: {meta['metrics']}", flush=True)
        dirs[d.name] = d
    for name, mdir in dirs.items():
        model, meta = load_for(str(mdir), ds)
        entry = results["models"].setdefault(name, {})
        entry["planted"] = planted_targets(meta)
        entry["metrics"] = {k: meta["metrics"].get(k) for k in ("clean_accuracy", "attack_success_rate")}
        budget = checkpoint_clean_budget(ds, meta, args.budget, args.budget_seed)
        if "nc" not in entry and "nc" not in args.skip:
            r = scan_run(ds, str(mdir), budget_size=args.budget, report_dir=str(out / f"scan-{name}"),
                         budget_seed=args.budget_seed, progress=args.progress, strip=False)
            entry["nc"] = {k: r[k] for k in ("backdoored", "suspected_target", "anomaly_index", "flagged_labels",
                                             "l1_norms", "anomaly_indices", "attack_success", "converged", "seconds")}
            print(f"{name}: NC flagged={r['backdoored']} target={r['suspected_target']} "
                  f"AI={r['anomaly_index']:.2f} ({r['seconds']['neural_cleanse']:.0f} s)", flush=True)
            save()
        if "strip" not in entry and "strip" not in args.skip:
            attack = planted_attack(meta) or {}
            if not attack or attack.get("kind") in (None, "multi"):  # trigger backdoors and the clean model
                entry["strip"] = strip_eval(model, meta, ds, budget, args.strip_test, args.budget_seed, args.progress)
                print(f"{name}: STRIP {entry['strip']}", flush=True)
                save()
        if "poison" not in entry and "poison" not in args.skip:
            if records_poisoning(meta):
                entry["poison"] = poison_eval(model, meta, ds, budget, args.progress)
                print(f"{name}: poison detection {entry['poison']}", flush=True)
                save()
    print(table(results))


if __name__ == "__main__":
    main()
