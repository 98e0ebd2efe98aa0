"""Benchmark: how the detectors hold up across models nobody tuned them on (issue 37).

Trains a grid of fresh small-cnn models with the CLI's defaults (MNIST BadNets, blended and dynamic at 10% poison,
five training seeds each; MNIST BadNets at 1% and 5% poison, three seeds each; Fashion-MNIST BadNets at 10%,
three seeds), then runs every detector on every model with the checkpoint's 1,000-image clean budget:

- activation clustering: FastICA and PCA reduction, each with our clean-budget analysis and the paper's
  relative-size and silhouette analyses; precision / recall against the poisoned indices rebuilt from the
  checkpoint's provenance, and the warnings the result carries;
- spectral signatures: our clean-budget rule and the paper's rule (1.5 x the poison rate per label);
- STRIP: threshold at 1% FRR from the clean budget, FRR on held-out clean test images, detection rate on
  triggered test images;
- Neural Cleanse: flagged?, the label it names, anomaly index.

Penultimate features of each model's training set are computed once and kept (OUT/features/NAME.npz), so a rerun
with another rule costs seconds. Results go to OUT/results.json after every step; a rerun skips what is done.

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/detector_stability.py --out bench-out/detector-stability \\
        --shard 0/2 &
    OMP_NUM_THREADS=1 taskset -c 1 python benchmarks/detector_stability.py --out bench-out/detector-stability \\
        --shard 1/2 &
    python benchmarks/detector_stability.py --out bench-out/detector-stability --table
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

import numpy as np
import torch

from backdoorlab.attacks import backdoor_of, make_poisoning_attack
from backdoorlab import checkpoint_clean_budget
from backdoorlab.data import load_dataset
from backdoorlab.detectors.activation_clustering import activation_clustering
from backdoorlab.detectors.poison_detection import detection_metrics, penultimate_features, poisoned_training_set
from backdoorlab.detectors.spectral_signatures import spectral_signatures
from backdoorlab.detectors.strip import StripConfig, StripDetector
from backdoorlab.models import load_for
from backdoorlab.models.sidecar import planted_attack
from backdoorlab.runs import scan_run, train_defaults, train_run
from backdoorlab.tensors import to_float
from backdoorlab.train import TrainConfig
from common import machine, open_results

ARCH = "small-cnn"


def grid() -> list[dict]:
    """The models, in the order they are trained: (data set, attack, poison rate, seed)."""
    models = []
    for attack in ("badnets", "blended", "dynamic"):
        for seed in range(1, 6):
            models.append(dict(dataset="mnist", attack=attack, rate=0.1, seed=seed))
    for seed in range(1, 4):
        models.append(dict(dataset="fashion-mnist", attack="badnets", rate=0.1, seed=seed))
    for rate in (0.05, 0.01):
        for seed in range(1, 4):
            models.append(dict(dataset="mnist", attack="badnets", rate=rate, seed=seed))
    return named(models)


def validation_grid() -> list[dict]:
    """Models the detectors' defaults were not chosen on (trained after the choice): MNIST seeds 6 and 7 of each
    attack, Fashion-MNIST blended and dynamic (seed 1)."""
    models = [dict(dataset="mnist", attack=a, rate=0.1, seed=s) for a in ("badnets", "blended", "dynamic")
              for s in (6, 7)]
    models += [dict(dataset="fashion-mnist", attack=a, rate=0.1, seed=1) for a in ("blended", "dynamic")]
    return named(models)


def named(models: list[dict]) -> list[dict]:
    for m in models:
        m["name"] = f"{m['dataset']}-{m['attack']}-p{m['rate']:g}-s{m['seed']}"
    return models


def train_model(spec: dict, ds, model_dir: pathlib.Path, progress: bool) -> None:
    """Train one model of the grid as `backdoorlab train --dataset D --arch small-cnn --attack A --poison-rate R
    --seed S` does (target 0, the attack's default trigger)."""
    attack = make_poisoning_attack(spec["attack"], target=0, poison_rate=spec["rate"],
                                   image_shape=tuple(ds.train_x.shape[1:]))
    cfg = TrainConfig(seed=spec["seed"], **train_defaults(spec["dataset"], ARCH))
    _, meta = train_run(ds, ARCH, cfg, attack, out=str(model_dir), progress=progress, desc=spec["name"])
    print(f"trained {spec['name']}: {meta['metrics']}", flush=True)


def features(model, meta, ds, budget, path: pathlib.Path, progress: bool):
    """The training set's and the clean budget's penultimate features, cached in ``path``."""
    if path.exists():
        z = np.load(path)
        return z["train"], z["y"], z["poisoned"], z["clean"], z["clean_y"], float(z["seconds"])
    data = poisoned_training_set(ds, meta)
    tick = time.time()
    train = penultimate_features(model, data.x, progress=progress).numpy()
    clean = penultimate_features(model, budget.x).numpy()
    seconds = time.time() - tick
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp.npz")
    np.savez(tmp, train=train, y=np.asarray(data.y), poisoned=np.asarray(data.poisoned), clean=clean,
             clean_y=np.asarray(budget.y), seconds=seconds)
    tmp.replace(path)
    return train, np.asarray(data.y), np.asarray(data.poisoned), clean, np.asarray(budget.y), seconds


def training_set_detectors(feats, rate: float) -> dict:
    """Every variant of the two training-set detectors on one model's features."""
    train, y, poisoned, clean, clean_y, _ = feats
    runs = {
        "ac-default": lambda: activation_clustering(train, y, clean, clean_y),
        # the former default: FastICA only, the k-means midpoint as the boundary
        "ac-ica-kmeans": lambda: activation_clustering(train, y, clean, clean_y, reduction="ica",
                                                       fallback_reduction=None, boundary="kmeans"),
        "ac-pca-kmeans": lambda: activation_clustering(train, y, clean, clean_y, reduction="pca",
                                                       fallback_reduction=None, boundary="kmeans"),
        "ac-paper-size": lambda: activation_clustering(train, y, analysis="size", reduction="ica"),
        "ac-paper-silhouette": lambda: activation_clustering(train, y, analysis="silhouette", reduction="ica"),
        "ac-pca-size": lambda: activation_clustering(train, y, analysis="size", reduction="pca"),
    }
    runs["ss-one-direction"] = lambda: spectral_signatures(train, y, clean, clean_y, spread_ratio=1e9)
    runs["ss-paper"] = lambda: spectral_signatures(train, y, rule="paper", poison_fraction=rate)
    # the paper's epsilon bounds the poisoned share of a label; an all-to-one attack puts all of it in the target,
    # so the overall rate understates it. The oracle gives the rule the true largest share (capped so that
    # 1.5 x eps < 1).
    hit = np.bincount(y[poisoned], minlength=int(y.max()) + 1) / np.maximum(np.bincount(y), 1)
    runs["ss-paper-oracle"] = lambda: spectral_signatures(train, y, rule="paper",
                                                          poison_fraction=min(float(hit.max()), 0.66))
    runs["ss-default"] = lambda: spectral_signatures(train, y, clean, clean_y)
    out = {}
    for name, run in runs.items():
        det = run()
        m = detection_metrics(det, poisoned)
        out[name] = {**{k: (round(float(v), 4) if isinstance(v, float) else v) for k, v in m.items()},
                     "seconds": round(det.seconds, 2), "warnings": list(getattr(det, "warnings", []) or [])}
        if name.startswith("ac-"):  # the per-label split, to see why a label was or was not flagged
            out[name]["per_label"] = det.per_label
    return out


def strip_eval(model, meta, ds, budget, n_test: int, seed: int, progress: bool) -> dict:
    """STRIP with its defaults: threshold at 1% FRR on 500 clean budget images; FRR on ``n_test`` held-out clean
    test images and detection rate on the same images triggered (those the attack can move)."""
    backdoor = backdoor_of(meta)
    pick = torch.randperm(len(ds.test_y), generator=torch.Generator().manual_seed(seed))[:n_test]
    tx, ty = ds.test_x[pick], ds.test_y[pick]
    det = StripDetector(model, budget.x, StripConfig(seed=seed), progress=progress).fit(budget.x[:500])
    keep = backdoor.eligible(ty)
    r = det.evaluate(tx, backdoor.trigger.apply(to_float(tx[keep])))
    r["seconds"] = round(det.seconds, 1)
    return r


def evaluate(spec: dict, model_dir: pathlib.Path, out: pathlib.Path, entry: dict, save, args, datasets) -> None:
    ds = datasets(spec["dataset"])
    model, meta = load_for(str(model_dir), ds)
    assert planted_attack(meta)["target"] == 0  # the tables name label 0 as the target
    entry.update(spec=spec, metrics={k: meta["metrics"].get(k) for k in ("clean_accuracy", "attack_success_rate")},
                 train_seconds=meta["training"].get("seconds"))
    budget = checkpoint_clean_budget(ds, meta, args.budget, args.budget_seed)
    feats = features(model, meta, ds, budget, out / "features" / f"{spec['name']}.npz", args.progress)
    entry["feature_seconds"] = round(feats[5], 1)
    if "poison" not in entry or args.redo_poison:
        entry["poison"] = training_set_detectors(feats, spec["rate"])
        save()
    if "strip" not in entry and "strip" not in args.skip:
        entry["strip"] = strip_eval(model, meta, ds, budget, args.strip_test, args.budget_seed, args.progress)
        save()
    if "nc" not in entry and "nc" not in args.skip:
        r = scan_run(ds, str(model_dir), budget_size=args.budget, report_dir=str(out / "scans" / spec["name"]),
                     budget_seed=args.budget_seed, progress=args.progress, strip=False)
        entry["nc"] = {k: r[k] for k in ("backdoored", "suspected_target", "anomaly_index", "flagged_labels")}
        entry["nc"]["seconds"] = r["seconds"]["neural_cleanse"]
        save()


def pct(v) -> str:
    return "-" if v is None or v != v else f"{100 * v:.1f}"


GROUPS = (("acceptance: 10% poison, MNIST BadNets / blended / dynamic seeds 1-5, Fashion-MNIST BadNets seeds 1-3",
           lambda spec, validation: spec["rate"] == 0.1 and not validation),
          ("lower poison rates: MNIST BadNets 5% and 1%, seeds 1-3",
           lambda spec, validation: spec["rate"] < 0.1 and not validation),
          ("validation: models trained after the defaults were chosen",
           lambda spec, validation: validation))
VARIANTS = ["ac-default", "ac-ica-kmeans", "ac-pca-kmeans", "ac-paper-size", "ac-paper-silhouette", "ac-pca-size",
            "ss-default", "ss-one-direction", "ss-paper", "ss-paper-oracle"]


def grouped(models: dict):
    """(title, {name: row}) for each group of GROUPS that holds a model of ``models``."""
    validation = {s["name"] for s in validation_grid()}
    for title, member in GROUPS:
        rows = {n: r for n, r in models.items() if "spec" in r and member(r["spec"], n in validation)}
        if rows:
            yield title, rows


def meets(m: dict) -> bool:
    p, r = m["precision"], m["recall"]
    return p == p and r == r and p >= 0.90 and r >= 0.95


def spread(values: list[float]) -> str:
    from statistics import mean, pstdev

    if not values:
        return "-"
    return (f"mean {100 * mean(values):.2f}%, sd {100 * pstdev(values):.2f}, min {100 * min(values):.2f}%, "
            f"max {100 * max(values):.2f}% ({len(values)} models)")


def table(results: dict) -> str:
    models = results.get("models", {})
    lines = [f"{results.get('machine')}; clean budget {results.get('budget')} images (budget seed "
             f"{results.get('budget_seed')})", ""]
    for title, rows in grouped(models):
        lines += [f"### {title}", "", "Precision / recall (%); W: warnings the default activation clustering gave", "",
                  "| model | CA / ASR | " + " | ".join(VARIANTS) + " | W |", "| --- " * (len(VARIANTS) + 3) + "|"]
        for name, r in rows.items():
            p = r.get("poison") or {}
            cells = [f"{pct(p[v]['precision'])} / {pct(p[v]['recall'])}" if v in p else "-" for v in VARIANTS]
            lines.append(f"| {name} | {pct(r['metrics']['clean_accuracy'])} / "
                         f"{pct(r['metrics']['attack_success_rate'])} | " + " | ".join(cells) +
                         f" | {len((p.get('ac-default') or {}).get('warnings') or [])} |")
        lines += ["", "Models meeting recall >= 95% at precision >= 90%: " + "; ".join(
            f"{v} {sum(meets(r['poison'][v]) for r in rows.values() if v in (r.get('poison') or {}))} of "
            f"{sum(v in (r.get('poison') or {}) for r in rows.values())}" for v in VARIANTS), ""]
        strip = [r["strip"] for r in rows.values() if r.get("strip")]
        nc = [r["nc"] for r in rows.values() if r.get("nc")]
        if strip:
            lines.append("STRIP (threshold at 1% FRR on 500 budget images; 1,000 held-out test images): detection rate "
                         + spread([s["detection_rate"] for s in strip]) + "; FRR " + spread([s["frr"] for s in strip]))
        if nc:
            right = sum(bool(n["backdoored"]) and n["suspected_target"] == 0 for n in nc)
            ai = sorted(n["anomaly_index"] for n in nc)
            lines.append(f"Neural Cleanse: flagged {sum(bool(n['backdoored']) for n in nc)} of {len(nc)} models, "
                         f"{right} naming the target 0; anomaly index {ai[0]:.2f} to {ai[-1]:.2f} (median "
                         f"{ai[len(ai) // 2]:.2f})")
        lines.append("")
    lines += ["STRIP and Neural Cleanse per model:", "",
              "| model | STRIP FRR | STRIP detection | NC flagged | NC label | anomaly index |", "| --- | --- | --- | --- | --- | --- |"]
    for name, r in models.items():
        s_, nc = r.get("strip") or {}, r.get("nc") or {}
        lines.append(f"| {name} | {pct(s_.get('frr'))} | {pct(s_.get('detection_rate'))} | "
                     + (f"{'yes' if nc['backdoored'] else 'no'} | {nc['suspected_target']} | "
                        f"{nc['anomaly_index']:.2f} |" if nc else "- | - | - |"))
    return "\n".join(lines)


def compact_table(results: dict) -> str:
    """One row per model: the defaults and the papers' rules (precision / recall), STRIP's detection rate and
    Neural Cleanse's verdict; the docs' table."""
    models = results.get("models", {})
    cols = [("AC, ours", "ac-default"), ("AC, paper: size", "ac-paper-size"),
            ("AC, paper: silhouette", "ac-paper-silhouette"), ("SS, ours", "ss-default"),
            ("SS, paper (eps = rate)", "ss-paper"), ("SS, paper (eps = true share)", "ss-paper-oracle")]
    lines = ["| model | CA / ASR | " + " | ".join(c for c, _ in cols) + " | STRIP detection (FRR) | NC: anomaly "
             "index (label) |", "| --- " * (len(cols) + 4) + "|"]
    for title, rows in grouped(models):
        lines.append(f"| *{title.split(':')[0]}* |" + " |" * (len(cols) + 3))
        for name in sorted(rows, key=lambda n: (rows[n]["spec"]["dataset"], -rows[n]["spec"]["rate"],
                                                rows[n]["spec"]["attack"], rows[n]["spec"]["seed"])):
            r = rows[name]
            p = r.get("poison") or {}
            cells = []
            for _, v in cols:
                m = p.get(v)
                cell = f"{pct(m['precision'])} / {pct(m['recall'])}" if m else "-"
                cells.append(f"**{cell}**" if m and v in ("ac-default", "ss-default") and not meets(m) else cell)
            s_, nc = r.get("strip") or {}, r.get("nc") or {}
            strip = f"{pct(s_['detection_rate'])} ({pct(s_['frr'])})" if s_ else "-"
            ncell = (f"{nc['anomaly_index']:.2f} ({nc['suspected_target'] if nc['backdoored'] else 'none'})"
                     if nc else "-")
            ca, asr = r["metrics"]["clean_accuracy"], r["metrics"]["attack_success_rate"]
            lines.append(f"| {name} | {pct(ca)} / {pct(asr)} | " + " | ".join(cells) + f" | {strip} | {ncell} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench-out/detector-stability")
    ap.add_argument("--data-dir", default=None)
    ap.add_argument("--only", nargs="+", default=None, help="model names (default: the whole grid)")
    ap.add_argument("--grid", default="choice", choices=["choice", "validation"],
                    help="choice: the models the defaults were chosen on; validation: fresh ones, trained after")
    ap.add_argument("--shard", default="0/1", help="I/N: this process takes every N-th model from the I-th")
    ap.add_argument("--budget", type=int, default=1000)
    ap.add_argument("--budget-seed", type=int, default=0)
    ap.add_argument("--strip-test", type=int, default=1000, help="held-out clean test images for STRIP")
    ap.add_argument("--skip", nargs="*", default=[], choices=["nc", "strip"])
    ap.add_argument("--train-only", action="store_true")
    ap.add_argument("--redo-poison", action="store_true", help="rerun the training-set detectors (features kept)")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--table", nargs="?", const="full", choices=["full", "compact"],
                    help="print the table of OUT/results.json and exit (compact: the docs' table)")
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    if args.table:
        results = json.loads((out / "results.json").read_text())
        print(table(results) if args.table == "full" else compact_table(results))
        return
    out, results, save = open_results(args.out)
    results.update(budget=args.budget, budget_seed=args.budget_seed, machine=machine(),
                   command="python benchmarks/detector_stability.py " + " ".join(sys.argv[1:]))
    results.setdefault("models", {})
    cache = {}

    def datasets(name):
        if name not in cache:
            cache[name] = load_dataset(name, args.data_dir)
        return cache[name]

    i, n = (int(v) for v in args.shard.split("/"))
    chosen = grid() if args.grid == "choice" else validation_grid()
    specs = [s for s in chosen if args.only is None or s["name"] in args.only][i::n]
    for spec in specs:
        model_dir = out / "models" / spec["name"]
        if not (model_dir / "model.json").exists():
            train_model(spec, datasets(spec["dataset"]), model_dir, args.progress)
    if args.train_only:
        return
    for spec in specs:
        entry = results["models"].setdefault(spec["name"], {})
        evaluate(spec, out / "models" / spec["name"], out, entry, save, args, datasets)
        scores = ", ".join(f"{k} {v['precision']}/{v['recall']}" for k, v in entry["poison"].items())
        print(f"{spec['name']}: {scores}", flush=True)
    print(table(results))


if __name__ == "__main__":
    main()
