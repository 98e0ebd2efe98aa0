"""Paths of the two TSC stages on one suspect: the suspect against its permuted copy, then the suspect (aligned)
against the first stage's model. Prints per t the validation accuracy and loss on the budget's slice, test CA
and ASR, for stage 1 and for stage 2 from each given first-stage t; writes OUT.json. ``--from-run`` takes
stage 1 from a saved one-model sanitize run (permuted endpoint) instead of training it again.

    python benchmarks/exploration/symmetry_path.py bench-out/suspects/mnist-badnets --dataset mnist \\
        --budget 1000 --t1 0.4 --set init=midpoint --out bench-out/exploration/sym-mnist-badnets
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

from backdoorlab.budget import clean_budget
from backdoorlab.config import split_pairs
from backdoorlab.data import load_dataset
from backdoorlab.defenses import ModeConnectivitySanitizer, SanitizerConfig
from backdoorlab.models import create_model
from backdoorlab.models.sidecar import holdout_size
from backdoorlab.attacks import backdoor_of
from backdoorlab.models import load_for
from backdoorlab.runs import resolve_bn_augment
from backdoorlab.augment import sanitizer_augmentation
from backdoorlab.symmetry import find_unit_groups, match_units, permuted_copy
from backdoorlab.tensors import to_float


def show(title, rows):
    print(title)
    print("  t      " + " ".join(f"{r['t']:6.2f}" for r in rows))
    for key, label in (("val_accuracy", "val acc"), ("clean_accuracy", "test CA"), ("attack_success_rate", "ASR"),
                       ("reversed_trigger_success", "NC ASR")):
        if key in rows[0]:
            print(f"  {label:7s}" + " ".join(f"{100 * r[key]:6.2f}" for r in rows))
    print("  val loss" + " ".join(f"{r['val_loss']:6.3f}" for r in rows), flush=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("model")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--budget", type=int, required=True)
    ap.add_argument("--t1", type=float, nargs="*", default=[0.4], help="stage-1 points to start stage 2 from (none: stage 1 only)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    ap.add_argument("--nc", action="store_true",
                    help="reverse the suspect's trigger with Neural Cleanse on the fit images and add, per t, the "
                         "share of validation images its smallest reversed trigger sends to its label")
    ap.add_argument("--from-run", help="a sanitize output directory (one model, permuted endpoint) for stage 1")
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    ds = load_dataset(args.dataset)
    model, meta = load_for(args.model, ds)
    backdoor = backdoor_of(meta)
    holdout = holdout_size(meta, ds.name)
    budget = clean_budget(ds, args.budget, seed=0, holdout=holdout)
    base = dict(augment=sanitizer_augmentation(ds.name))
    cfg = SanitizerConfig(**{**base, **SanitizerConfig.parse_options(split_pairs(args.overrides), "the sanitizer")})
    cfg = resolve_bn_augment(cfg, meta)
    san = ModeConnectivitySanitizer(cfg, lambda: create_model(meta["arch"], **meta["arch_args"]), progress=False)
    fit, val = san.split_budget(budget)
    test = (ds.test_x, ds.test_y)
    result = {"model": args.model, "budget": args.budget, "config": cfg.to_dict(), "stage2": {}}
    tick = time.time()
    groups = find_unit_groups(model, fit.x[:8]).groups
    if args.from_run:
        import sys
        sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
        from common import load_saved_curve
        saved = load_saved_curve(args.from_run)
        curve_fields = ("curve", "init", "steps", "lr", "weight_decay", "batch_size", "augment", "val_fraction",
                        "min_val", "curve_distill", "curve_mixup", "seed")
        if any(getattr(saved.sanitizer.config, k) != getattr(cfg, k) for k in curve_fields) or \
                saved.budget.indices.tolist() != budget.indices.tolist():
            raise SystemExit(f"{args.from_run} was made with another curve recipe or budget")
        curve1 = saved.curve
    else:
        far = permuted_copy(model, groups, match_units(model, model, groups, fit.x, maximize=False))
        curve1 = san.fit_curve(model, far, fit)
    rows1 = san.path(curve1, fit, val, test, backdoor, ds.num_classes)
    result["stage1"] = rows1
    result["seconds_stage1"] = round(time.time() - tick, 1)
    show(f"stage 1 ({result['seconds_stage1']} s)", rows1)
    bn = san.bn_data(fit)
    probe = None
    if args.nc:
        from backdoorlab.defenses.neural_cleanse import neural_cleanse, trigger_success
        nc = neural_cleanse(model, fit.x, ds.num_classes, progress=False)
        label = nc.labels_to_unlearn()[0]
        trigger = nc.trigger_for(label)
        others = val.x[val.y != label]
        result["neural_cleanse"] = {k: v for k, v in nc.to_dict().items() if k != "config"}
        print(f"Neural Cleanse on the suspect: label {label}, anomaly index {nc.anomaly_index:.2f}, "
              f"flagged {nc.flagged_labels}, {nc.seconds:.0f} s", flush=True)

        def probe(curve, rows):
            for r in rows:
                r["reversed_trigger_success"] = trigger_success(curve.model_at(r["t"], bn), to_float(others), trigger)
        probe(curve1, rows1)
        show("stage 1 with the reversed trigger", rows1)
    for t1 in args.t1:
        tick = time.time()
        m1 = curve1.model_at(t1, bn)
        aligned = permuted_copy(model, groups, match_units(m1, model, groups, fit.x, maximize=True))
        curve2 = san.fit_curve(aligned, m1, fit)
        rows2 = san.path(curve2, fit, val, test, backdoor, ds.num_classes)
        if probe is not None:
            probe(curve2, rows2)
        result["stage2"][str(t1)] = rows2
        show(f"stage 2 from t1 = {t1} ({time.time() - tick:.0f} s)", rows2)
    out = pathlib.Path(args.out + ".json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
