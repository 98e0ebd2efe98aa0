"""Benchmark: plant BadNets in two endpoints, then sanitize (two models, one model) and fine-tune on clean budgets.

Writes OUT/results.json (every number, with the configuration and wall times) and prints a Markdown table.
Stages can be run separately (--stage endpoints, then --stage defenses); finished endpoints are reused.

    python benchmarks/sanitizer_benchmark.py --dataset mnist --arch small-cnn --budgets 1000 3000 --out bench-out/mnist
    python benchmarks/sanitizer_benchmark.py --dataset cifar10 --arch resnet20 --budgets 2500 --out bench-out/cifar10
"""

from __future__ import annotations

import argparse
import time

from backdoorlab.attacks import make_poisoning_attack
from backdoorlab.augment import sanitizer_augmentation
from backdoorlab.config import split_pairs
from backdoorlab.data import load_dataset
from backdoorlab.defenses import SanitizerConfig
from backdoorlab.errors import BackdoorlabError
from backdoorlab.runs import finetune_run, sanitize_run, train_defaults, train_run
from backdoorlab.train import TrainConfig
from common import machine, open_results



def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--arch", required=True)
    ap.add_argument("--budgets", type=int, nargs="+", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--stage", choices=["all", "endpoints", "defenses"], default="all")
    ap.add_argument("--steps", type=int, default=2400, help="curve (and second-endpoint) training steps")
    ap.add_argument("--lr", type=float, default=0.05)
    ap.add_argument("--refine-steps", type=int, default=SanitizerConfig.refine_steps,
                    help="fine-tuning of an interior chosen t on the whole budget (0: off)")
    ap.add_argument("--no-refine-guard", action="store_true",
                    help="refine an interior t without the guard's trial on the fit part")
    ap.add_argument("--finetune-steps", type=int, default=None, help="default: same as --steps")
    ap.add_argument("--variants", nargs="+", default=["two", "one", "finetune"],
                    choices=["two", "one", "finetune", "two-midpoint", "two-polychain", "two-scratch",
                             "two-polychain-scratch"])
    ap.add_argument("--stamp", choices=["data", "augmented"], default="data",
                    help="BadNets trigger stamping: on the data (data poisoning) or after augmentation "
                         "(outsourced training)")
    ap.add_argument("--trigger-value", default="1",
                    help="BadNets patch value: one number for every channel or one per channel, e.g. 1,0,1 (magenta)")
    ap.add_argument("--endpoint-seeds", type=int, nargs="+", default=[1, 2],
                    help="which endpoints to train (1 2; one each lets two processes share the work)")
    ap.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                    help="a SanitizerConfig field for the sanitizer variants (repeatable), e.g. --set curve_mixup=1")
    ap.add_argument("--tag", default="",
                    help="suffix of the variants' result keys and output folders (runs with other settings side by side)")
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args()
    try:  # typed like SanitizerConfig's fields, as the CLI's -o
        overrides = SanitizerConfig.parse_options(split_pairs(args.overrides), "the sanitizer")
    except BackdoorlabError as e:
        ap.error(f"--set: {e}")
    out, results, save = open_results(args.out)
    results.update(dataset=args.dataset, arch=args.arch, machine=machine())
    ds = load_dataset(args.dataset)
    value = [float(v) for v in args.trigger_value.split(",")]
    attack = make_poisoning_attack("badnets", target=0, poison_rate=0.1, stamp=args.stamp,
                                   value=value[0] if len(value) == 1 else value)
    results["attack"] = attack.to_dict()

    if args.stage in ("all", "endpoints"):
        results.setdefault("endpoints", {})
        for seed in args.endpoint_seeds:
            d = out / f"endpoint-{seed}"
            if (d / "model.json").exists():
                continue
            td = train_defaults(args.dataset, args.arch)
            if args.epochs:
                td["epochs"] = args.epochs
            td.setdefault("augment", "none")
            cfg = TrainConfig(seed=seed, **td)
            _, meta = train_run(ds, args.arch, cfg, attack, out=str(d), progress=args.progress, desc=f"endpoint {seed}")
            results["endpoints"][str(seed)] = {**meta["metrics"], "seconds": meta["training"]["seconds"],
                                               "config": meta["training"]}
            print(f"endpoint {seed}: {meta['metrics']} in {meta['training']['seconds']:.0f} s", flush=True)
            save()

    if args.stage in ("all", "defenses"):
        aug = sanitizer_augmentation(args.dataset)
        results.setdefault("defenses", {})
        for budget in args.budgets:
            for variant in args.variants:
                key = f"{variant}{args.tag}@{budget}"
                tick = time.time()
                if variant == "finetune":
                    steps = args.finetune_steps or args.steps
                    cfg = TrainConfig(epochs=0, steps=steps, lr=args.lr / 5, augment=aug, seed=0)
                    r = finetune_run(ds, str(out / "endpoint-1"), budget, cfg, progress=args.progress)
                    r = {**r, "config": cfg.to_dict()}
                else:
                    kw = dict(steps=args.steps, second_steps=args.steps, lr=args.lr, augment=aug,
                              refine_steps=args.refine_steps, refine_guard=not args.no_refine_guard)
                    if variant == "two-midpoint":
                        kw["init"] = "midpoint"
                    if variant in ("two-scratch", "two-polychain-scratch"):
                        kw["init"] = "scratch"
                    if variant in ("two-polychain", "two-polychain-scratch"):
                        kw["curve"] = "polychain"
                    cfg = SanitizerConfig(**{**kw, **overrides})
                    models = [str(out / "endpoint-1")] + ([str(out / "endpoint-2")] if variant != "one" else [])
                    r = sanitize_run(ds, models, budget, str(out / f"sanitized-{variant}{args.tag}-{budget}"), cfg,
                                     progress=args.progress)
                    r = {**r, "config": cfg.to_dict()}
                r["wall_seconds"] = round(time.time() - tick, 1)
                results["defenses"][key] = r
                print(f"{key}: t={r.get('t')} ensemble={r.get('ensemble')} CA={r['clean_accuracy']:.4f} "
                      f"ASR={r['attack_success_rate']:.4f} ({r['wall_seconds']:.0f} s)", flush=True)
                save()
    save()


if __name__ == "__main__":
    main()
