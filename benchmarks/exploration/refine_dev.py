"""How many refine steps? Fine-tune a two-model sanitizer run's chosen model on the whole budget and score it on
images the defender would not have.

Rebuilds the model the sanitizer's rule chooses on the run's path.json (the model at t, or the average of t and
1 - t) from RUN/curve.safetensors (the curve does not depend on the refine step, so this is the model the current
sanitizer has before refining), then for each STEPS value repeats the sanitizer's
refine step (``ModeConnectivitySanitizer.refine``: fine-tuning on fit part + validation slice, batch norm
re-estimated on the budget) and prints CA on the development images (the held-out pool outside the budget:
never the test set, never the budget) next to test CA and ASR.

    BACKDOORLAB_DATA=../shared/data python benchmarks/exploration/refine_dev.py bench-out/mnist/sanitized-two-1000 0 300 600 1200

``--lr`` overrides the refine learning rate; ``--no-ensemble`` rebuilds the single model the rule prefers.
``--guard`` also runs the refine guard's trial for each step count (``ModeConnectivitySanitizer.refine_check``:
refine on the fit part alone, score the validation slice's loss and accuracy) and prints its verdict, next to
what the refined model does on the development images.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from common import load_saved_curve  # noqa: E402

from backdoorlab.metrics import accuracy, evaluate, predict  # noqa: E402
from backdoorlab.runs import backdoor_of  # noqa: E402
from backdoorlab.report import chosen_text  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("steps", type=int, nargs="*", default=[0, 600])
    ap.add_argument("--lr", type=float, default=None)
    ap.add_argument("--guard", action="store_true")
    ap.add_argument("--no-ensemble", action="store_true", help="rebuild the single model the rule prefers, as "
                    "--no-ensemble would export it, instead of the average of t and 1 - t")
    args = ap.parse_args()
    run, steps_list = pathlib.Path(args.run), args.steps
    rows = json.loads((run / "path.json").read_text())["path"]
    saved = load_saved_curve(run)
    ds, sanitizer, budget = saved.dataset, saved.sanitizer, saved.budget
    if args.lr is not None:
        sanitizer.config = dataclasses.replace(sanitizer.config, refine_lr=args.lr)
    if args.no_ensemble:
        sanitizer.config = dataclasses.replace(sanitizer.config, ensemble=False)
    dev = saved.dev
    backdoor = backdoor_of(saved.loaded[0][1])
    t, ts, chosen, _ = sanitizer.choose(saved.curve, rows, saved.fit_part)  # refine and its trial train copies
    print(f"{run}: {chosen_text(t, ts if len(ts) > 1 else None)}, {len(dev)} development images", flush=True)
    for steps in steps_list:
        tick = time.time()
        model = chosen
        guard = ""
        if steps and args.guard:
            check = sanitizer.refine_check(model, saved.fit_part, saved.val_part, steps)
            guard = (f"  guard: val loss {check['val_loss_before']:.4f} -> {check['val_loss_after_trial']:.4f}, "
                     f"acc {check['val_accuracy_before']:.4f} -> {check['val_accuracy_after_trial']:.4f} "
                     f"({'accept' if check['accepted'] else 'reject'})")
        if steps:
            model = sanitizer.refine(model, budget, steps)
        dev_acc = accuracy(predict(model, ds.train_x[dev]), ds.train_y[dev])
        m = evaluate(model, ds.test_x, ds.test_y, backdoor, ds.num_classes)
        print(f"refine {steps:5d} steps: dev {dev_acc:.4f}  test CA {m['clean_accuracy']:.4f} "
              f"ASR {m['attack_success_rate']:.4f}{guard}  ({time.time() - tick:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
