"""Does PAM's path-aware step help the sanitizer's export? Fine-tune a sanitized model on the clean budget with
every step's gradient taken at a point displaced by rho towards the suspect (PAM's step, without a reversed
trigger: the sanitizer knows none), then run the retuning attack on it beside the clean control.

    python benchmarks/exploration/sanitizer_pam.py --dataset mnist --suspect S --sanitized M --control C \
        --budget 1000 --steps 200 --rho 0.5 --out bench-out/exploration/sanitizer-pam

Prints CA / ASR before and after the extra updates, and the post-retune ASR of both against the control's.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

sys.path.insert(0, str(pathlib.Path(__file__).parents[1]))
from common import machine  # noqa: E402

from backdoorlab.attacks import backdoor_of
from backdoorlab.budget import clean_budget
from backdoorlab.data import load_dataset
from backdoorlab.defenses.finetune import finetune
from backdoorlab.defenses.pam import PathAwareWeights
from backdoorlab.defenses.retune import RetuneConfig, retune, retuning_set
from backdoorlab.io import atomic_write_json
from backdoorlab.metrics import evaluate
from backdoorlab.models import load_for
from backdoorlab.models.sidecar import holdout_size
from backdoorlab.runs.retune import suspect_at_model_shape
from backdoorlab.train import TrainConfig


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    for name in ("--dataset", "--suspect", "--sanitized", "--control", "--out"):
        ap.add_argument(name, required=True)
    ap.add_argument("--budget", type=int, default=1000)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--lr", type=float, default=0.01)
    ap.add_argument("--augment", default="none", help="The fine-tuning's augmentation (CIFAR-10: crop-flip).")
    ap.add_argument("--rho", type=float, nargs="+", default=[0.5])
    args = ap.parse_args()
    ds = load_dataset(args.dataset)
    suspect, meta = load_for(args.suspect, ds)
    sanitized, sanitized_meta = load_for(args.sanitized, ds)
    control, _ = load_for(args.control, ds)
    backdoor = backdoor_of(meta)
    test = (ds.test_x, ds.test_y, backdoor, ds.num_classes)
    budget = clean_budget(ds, args.budget, seed=0)
    cfg = RetuneConfig()
    rset = retuning_set(ds, backdoor, cfg, holdout_size(meta, ds.name))

    def measured(model):
        before = evaluate(model, *test)
        after = evaluate(retune(model, rset.x, rset.y, cfg, progress=False), *test)
        return {"clean_accuracy": before["clean_accuracy"], "attack_success_rate": before["attack_success_rate"],
                "post_retune_attack_success_rate": after["attack_success_rate"]}

    rows = {"control": measured(control), "sanitized": measured(sanitized)}
    recipe = TrainConfig(epochs=0, steps=args.steps, lr=args.lr, batch_size=128, seed=0, augment=args.augment)
    # an averaged export (an ensemble): the suspect copied into every member, so each member is pushed away from it
    reference = suspect_at_model_shape(suspect, meta, sanitized, sanitized_meta)
    for rho in [0.0, *args.rho]:
        weights_at = PathAwareWeights(reference, rho) if rho > 0 else None
        tuned = finetune(sanitized, budget.x, budget.y.long(), recipe, progress=False, weights_at=weights_at)
        rows[f"sanitized + {args.steps} steps, rho {rho:g}"] = measured(tuned)
        print(rho, rows[f"sanitized + {args.steps} steps, rho {rho:g}"], flush=True)
    pathlib.Path(args.out).mkdir(parents=True, exist_ok=True)
    atomic_write_json(pathlib.Path(args.out) / "results.json",
                      {"command": "python " + " ".join(sys.argv), "machine": machine(), "rows": rows})
    c = rows["control"]["post_retune_attack_success_rate"]
    print("| model | CA / ASR | post-retune ASR | distance to the control |\n| --- | --- | --- | --- |")
    for name, r in rows.items():
        print(f"| {name} | {100 * r['clean_accuracy']:.2f} / {100 * r['attack_success_rate']:.2f} | "
              f"{100 * r['post_retune_attack_success_rate']:.2f} | "
              f"{100 * (r['post_retune_attack_success_rate'] - c):+.2f} |")


if __name__ == "__main__":
    main()
