"""Re-evaluate a saved sanitizer run's path with the current batch-norm rule, without retraining the curve.

The curve's training does not depend on how batch norm is re-estimated afterwards (it trains with batch
statistics), so loading OUT/curve.safetensors and re-scoring the grid gives exactly the path and the chosen t that
a full rerun with the same seeds would give. Used when the re-estimation rule changed (CIFAR-10: budget images
augmented as in training instead of pixel-exact).

    python benchmarks/repath.py bench-out/cifar10/sanitized-two-2500 --out bench-out/cifar10/repath-two-2500
"""

from __future__ import annotations

import argparse
import dataclasses
import pathlib
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("run", help="a sanitize output directory (config.json, curve.safetensors)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--bn-augment", default="auto")
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args()
    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    from common import load_saved_curve, machine

    from backdoorlab.io import atomic_write_json
    from backdoorlab.metrics import evaluate
    from backdoorlab.attacks import backdoor_of
    from backdoorlab.report import chosen_text

    saved = load_saved_curve(args.run, args.bn_augment, args.progress)
    ds, loaded, sanitizer, curve = saved.dataset, saved.loaded, saved.sanitizer, saved.curve
    fit_part, val_part, cfg = saved.fit_part, saved.val_part, saved.sanitizer.config
    backdoor = backdoor_of(loaded[0][1])
    tick = time.time()
    test = (ds.test_x, ds.test_y)
    rows = sanitizer.path(curve, fit_part, val_part, test, backdoor, ds.num_classes)
    t, ts, model, _ = sanitizer.choose(curve, rows, fit_part)  # the model a rerun exports, before any refine step
    chosen = next(r for r in rows if r["t"] == t) if len(ts) == 1 else evaluate(model, *test, backdoor, ds.num_classes)
    endpoints = [evaluate(m, *test, backdoor, ds.num_classes) for m, _ in loaded]
    ensemble = ts if len(ts) > 1 else None
    out = {"from": str(args.run), "bn_augment": cfg.bn_augment, "t": t, "ensemble": ensemble,
           "clean_accuracy": chosen["clean_accuracy"],
           "attack_success_rate": chosen.get("attack_success_rate"), "path": rows,
           "endpoints": [{k: e[k] for k in ("clean_accuracy", "attack_success_rate")} for e in endpoints],
           "seconds": round(time.time() - tick, 1), "machine": machine(),
           "command": "python benchmarks/repath.py " + " ".join(sys.argv[1:]),
           "sanitizer": dataclasses.asdict(cfg)}
    pathlib.Path(args.out).mkdir(parents=True, exist_ok=True)
    atomic_write_json(pathlib.Path(args.out) / "path.json", out)
    for r in rows:
        print(f"t={r['t']:.1f} val {r['val_accuracy']:.4f} CA {r['clean_accuracy']:.4f} "
              f"ASR {r.get('attack_success_rate')}")
    print(f"chosen {chosen_text(t, ensemble)}: CA {out['clean_accuracy']:.4f} ASR {out['attack_success_rate']:.4f}")


if __name__ == "__main__":
    main()
