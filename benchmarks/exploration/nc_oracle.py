"""Exploration: where does Neural Cleanse unlearning's residual ASR come from?

For each draw of the clean budget: reverse-engineer the triggers as ``nc-unlearning`` does, report the flagged
label and how much of the real trigger the reversed mask covers, then unlearn with (a) the reversed trigger and
(b) the real trigger, recorded in the suspect's sidecar (an oracle: the defender never has it), with the same
recipe and stamping (``-o mask_boost=K`` applies to both; the real trigger's mask is already 1;
``-o complete_steps=N`` grows the reversed trigger first and reports how much of the real one it then covers;
``-o grow_gain=G`` grows it pixel by pixel, before any completion, and reports the same),
and score both on the test set. If the oracle leaves as much of the backdoor as the reversed trigger does, a better reversal
cannot help; if it leaves much less, the reversal is what falls short.

    BACKDOORLAB_DATA=../shared/data OMP_NUM_THREADS=1 python benchmarks/exploration/nc_oracle.py \\
        bench-out/mnist-badnets-seed1 --dataset mnist --budget 1000 --seeds 0 1 2 -o stamp=per-batch
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--budget", type=int, default=1000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("-o", dest="options", action="append", default=[], metavar="KEY=VALUE",
                    help="nc-unlearning option (as `backdoorlab repair -o`)")
    ap.add_argument("--masks-only", action="store_true",
                    help="only reverse (and complete) the triggers and report what they cover; no unlearning")
    ap.add_argument("--out", help="write the results as JSON here")
    args = ap.parse_args()

    from backdoorlab.budget import clean_budget
    from backdoorlab.models.sidecar import holdout_size
    from backdoorlab.defenses.neural_cleanse import (ReversedTrigger, complete_trigger, grow_trigger, neural_cleanse,
                                                     neural_cleanse_unlearn, trigger_gaps, trigger_success)
    from backdoorlab.config import split_pairs
    from backdoorlab.defenses.repair import REPAIRERS, repairer_config
    from backdoorlab.errors import BackdoorlabError
    from backdoorlab.metrics import evaluate
    from backdoorlab.tensors import to_float
    import torch.nn.functional as F
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    from common import load_patch_suspect

    try:
        options = REPAIRERS.parse_options("nc-unlearning", split_pairs(args.options))
        ignored = sorted(set(options) & {"labels", "restarts", "rounds"})
        if ignored:  # both arms unlearn one trigger once; these options would silently not apply
            raise BackdoorlabError(f"nc_oracle.py does not apply {', '.join(ignored)}")
        cfg = repairer_config("nc-unlearning", **options)
        dataset, model, meta, backdoor = load_patch_suspect(args.model, args.dataset)
    except BackdoorlabError as e:
        sys.exit(f"error: {e}")
    target = int(backdoor.target)
    shape = dataset.test_x.shape[1:]
    mask, pattern = backdoor.trigger.mask_and_pattern(shape)
    oracle = ReversedTrigger(target, mask[0], pattern[0], float(mask.sum()), 1.0, True, 0, 0.0)
    # the real trigger grown by one pixel on every side (a larger patch of the same colour)
    grown_mask = F.max_pool2d(mask[0], 3, stride=1, padding=1)
    grown_pattern = F.max_pool2d(pattern[0] * mask[0], 3, stride=1, padding=1)
    grown = ReversedTrigger(target, grown_mask, grown_pattern, float(grown_mask.sum()), 1.0, True, 0, 0.0)
    others = to_float(dataset.test_x[dataset.test_y != target])
    real = mask[0, 0] > 0
    holdout = holdout_size(meta, dataset.name)
    test = (dataset.test_x, dataset.test_y)
    rows = []
    for seed in args.seeds:
        budget = clean_budget(dataset, args.budget, seed=seed, holdout=holdout)
        tick = time.time()
        result = neural_cleanse(model, budget.x, dataset.num_classes, cfg.nc_config(), progress=False)
        label = result.labels_to_unlearn()[0]
        rev = result.trigger_for(int(label))
        row = {"budget_seed": seed, "flagged": result.flagged_labels, "label": int(label),
               "anomaly_index": result.anomaly_index, "real_pixels": int(real.sum()), **_cover(rev, real)}
        fires = {"reversed": rev, "real": oracle, "real grown by 1 pixel": grown}
        if cfg.grow_gain:  # -o grow_gain=G: the reversed arm stamps the grown trigger
            rev, added = grow_trigger(model, budget.x[budget.y != rev.label], rev, min_gain=cfg.grow_gain,
                                      seed=cfg.seed)
            row["grown"] = {**_cover(rev, real), "pixels_added": added}
            fires["grown"] = rev
        if cfg.complete_steps:  # -o complete_steps=N: the reversed arm stamps the completed trigger
            rev = complete_trigger(model, budget.x, rev, cfg.nc_config(), steps=cfg.complete_steps)
            row["completed"] = _cover(rev, real)
            fires["completed"] = rev
        # how often each trigger sends the non-target test images to the target label
        row["fires"] = {name: trigger_success(model, others, t) for name, t in fires.items()}
        # and by how much: the target's mean logit margin over the same images
        row["margin"] = {name: float(trigger_gaps(model, others, t).mean()) for name, t in fires.items()}
        for name, trig in () if args.masks_only else (("reversed", rev), ("oracle", oracle)):
            repaired = neural_cleanse_unlearn(model, budget.x, budget.y, cfg.train_config(), triggers=[trig],
                                              fraction=cfg.fraction, stamp=cfg.stamp,
                                              mask_boost=cfg.mask_boost, progress=False)
            res = evaluate(repaired, *test, backdoor, dataset.num_classes)
            row[name] = {"clean_accuracy": res["clean_accuracy"], "attack_success_rate": res["attack_success_rate"]}
        row["seconds"] = round(time.time() - tick, 1)
        rows.append(row)
        print(json.dumps(row), flush=True)
    print(f"\n| budget seed | flagged label | real-trigger pixels the mask covers (> 0.5) | mask L1 (outside the "
          f"trigger) | reversed: CA / ASR | oracle: CA / ASR |\n| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        c = r.get("completed") or r.get("grown")
        then = f" -> {c['real_pixels_over_half']}" if c else ""
        then_l1 = f" -> {c['mask_l1']:.1f} ({c['mask_mass_outside']:.1f})" if c else ""
        print(f"| {r['budget_seed']} | {r['label']} | {r['real_pixels_over_half']}{then} of {r['real_pixels']} | "
              f"{r['mask_l1']:.1f} ({r['mask_mass_outside']:.1f}){then_l1} | "
              + " | ".join(f"{100 * r[k]['clean_accuracy']:.2f} / {100 * r[k]['attack_success_rate']:.2f}"
                           if k in r else "not run" for k in ("reversed", "oracle")) + " |")
    if args.out:
        pathlib.Path(args.out).write_text(json.dumps({"model": args.model, "options": args.options, "rows": rows},
                                                     indent=1))


def _cover(trigger, real) -> dict:
    """How much of the real trigger's support (boolean (H, W)) a reversed trigger's mask covers."""
    m = trigger.mask.reshape(real.shape)
    return {"mask_l1": trigger.l1, "real_trigger_mass": float(m[real].sum()),
            "real_pixels_over_half": int((m[real] > 0.5).sum()), "mask_mass_outside": float(m[~real].sum())}


if __name__ == "__main__":
    main()
