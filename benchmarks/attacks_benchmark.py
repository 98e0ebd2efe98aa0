"""Benchmark: every attack against a clean model of the same recipe, then the one-model sanitizer on each.

For each attack: clean accuracy (CA) kept, attack success rate (ASR) reached, and CA / ASR of the model the
mode-connectivity sanitizer picks from clean budgets (one suspect model; second endpoint trained from scratch),
plus CA / ASR at the middle of the path (t = 0.5). Results go to OUT/results.json after every step, so an
interrupted run keeps what it measured; a rerun skips what is done.

    python benchmarks/attacks_benchmark.py --dataset mnist --arch small-cnn --budgets 1000 3000 \\
        --out bench-out/attacks-mnist
    python benchmarks/report_tables.py --attacks bench-out/attacks-mnist/results.json
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

from backdoorlab.attacks import (MODEL_ATTACKS, FaultInjectionConfig, TriggerlessAttack, WeightPerturbationConfig,
                                 make_poisoning_attack)
from backdoorlab.augment import sanitizer_augmentation
from backdoorlab.data import load_dataset
from backdoorlab.defenses import SanitizerConfig
from backdoorlab.models.sidecar import holdout_size
from backdoorlab.attacks import backdoor_of
from backdoorlab.models import load_for
from backdoorlab.runs import SECOND_ENDPOINT_DIR, model_attack_run, sanitize_run, train_defaults, train_run
from backdoorlab.runs.sanitize import second_endpoint_record
from backdoorlab.train import TrainConfig
from common import machine, open_results

TRAINED = {  # name -> attack factory given the image shape and the trigger stamping ("data" or "augmented")
    "badnets": lambda s, st="data": make_poisoning_attack("badnets", target=0, poison_rate=0.1, stamp=st),
    "blended": lambda s, st="data": make_poisoning_attack("blended", target=0, poison_rate=0.1, stamp=st),
    "dynamic": lambda s, st="data": make_poisoning_attack("dynamic", target=0, poison_rate=0.1, stamp=st),
    "dynamic-3-targets": lambda s, st="data": make_poisoning_attack("dynamic", target=[0, 1, 2], poison_rate=0.1,
                                                                     image_shape=s, stamp=st),
    "badnets-all-to-all": lambda s, st="data": make_poisoning_attack("badnets", mode="all-to-all", poison_rate=0.1,
                                                                      stamp=st),
    "blended-all-to-all": lambda s, st="data": make_poisoning_attack("blended", mode="all-to-all", poison_rate=0.1,
                                                                      stamp=st),
    "dynamic-all-to-all": lambda s, st="data": make_poisoning_attack("dynamic", mode="all-to-all", poison_rate=0.1,
                                                                      stamp=st),
    "triggerless": lambda s, st="data": TriggerlessAttack(target=0, dropout=0.3, n_neurons=3, backdoor_fraction=0.1),
}
ALL = ("badnets", "blended", "dynamic", "weight-perturbation", "fault-injection", "single-bias", "triggerless",
       "dynamic-3-targets", "badnets-all-to-all", "blended-all-to-all", "dynamic-all-to-all")



def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--arch", required=True)
    ap.add_argument("--budgets", type=int, nargs="*", default=[],
                    help="clean budgets to sanitize every attack with (none: plant the attacks only)")
    ap.add_argument("--out", required=True)
    ap.add_argument("--attacks", nargs="+", default=list(ALL), choices=list(ALL))
    ap.add_argument("--epochs", type=int, default=None)
    ap.add_argument("--steps", type=int, default=2400, help="sanitizer curve (and second-endpoint) steps")
    ap.add_argument("--epsilon", type=float, default=0.01, help="weight-perturbation radius")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--stamp", choices=["data", "augmented"], default="data",
                    help="trigger stamping of the data-poisoning attacks: on the data, or after the victim's "
                         "augmentation (outsourced training); recorded per attack")
    ap.add_argument("--progress", action="store_true")
    ap.add_argument("--no-clean", action="store_true",
                    help="do not train the clean reference model (data-poisoning attacks only; no CA drop column)")
    ap.add_argument("--second-endpoints", nargs="*", default=[], metavar="DIR",
                    help="other benchmark outputs whose sanitized-*/second-endpoint models may be reused (this "
                         "run's own are always tried): a scratch endpoint made for the same budget, architecture "
                         "and recipe is the same model whatever the suspect, so it is trained once")
    args = ap.parse_args()
    if args.no_clean and set(args.attacks) & set(MODEL_ATTACKS):
        ap.error(f"--no-clean: the model attacks ({', '.join(MODEL_ATTACKS)}) start from the clean model")
    out, results, save = open_results(args.out)
    results.update(dataset=args.dataset, arch=args.arch, machine=machine(), seed=args.seed,
                   command="python benchmarks/attacks_benchmark.py " + " ".join(
                       f"--{k.replace('_', '-')}" + ("" if v is True else
                                                     f" {' '.join(map(str, v)) if isinstance(v, list) else v}")
                       for k, v in vars(args).items() if v is not None and v is not False))
    results.setdefault("attacks", {})
    ds = load_dataset(args.dataset)
    shape = (ds.in_channels, *ds.image_size)
    td = train_defaults(args.dataset, args.arch)
    if args.epochs:
        td["epochs"] = args.epochs
    td.setdefault("augment", "none")

    def train(name, attack):
        d = out / name
        if not (d / "model.json").exists():
            _, meta = train_run(ds, args.arch, TrainConfig(seed=args.seed, **td), attack, out=str(d),
                                progress=args.progress, desc=name)
            print(f"{name}: {meta['metrics']} in {meta['training']['seconds']:.0f} s", flush=True)
        return json.loads((d / "model.json").read_text())

    if not args.no_clean:
        clean = train("clean", None)
        results["clean"] = {**clean["metrics"], "seconds": clean["training"]["seconds"]}
        save()

    for name in args.attacks:  # plant every attack first: the table fills in even if sanitizing is cut short
        if name in results["attacks"]:
            continue
        tick = time.time()
        if name in MODEL_ATTACKS:
            kw = {}
            if MODEL_ATTACKS[name].traits["trigger"]:
                kw = dict(backdoor=make_poisoning_attack("badnets", target=0).backdoor,
                          awp=WeightPerturbationConfig(epsilon=args.epsilon, seed=args.seed))
            else:  # Liu et al.'s single bias attack flips one image; the gradient attack a few
                kw = dict(fault=FaultInjectionConfig(seed=args.seed), n_images=1 if name == "single-bias" else 5)
            s = model_attack_run(ds, name, str(out / "clean"), str(out / name), seed=args.seed,
                                 progress=args.progress, **kw)
            entry = {**s["after"], "relative_weight_change": s["relative_weight_change"],
                     "epsilon": args.epsilon if name == "weight-perturbation" else None,
                     "attack": json.loads((out / name / "model.json").read_text())["provenance"]["attack"]}
        else:
            meta = train(name, TRAINED[name](shape, args.stamp))
            entry = {**meta["metrics"], "attack": meta["provenance"]["attack"]}
        entry["seconds"] = round(time.time() - tick, 1)
        entry["sanitized"] = {}
        results["attacks"][name] = entry
        print(f"{name}: CA {entry['clean_accuracy']:.4f} ASR {entry['attack_success_rate']:.4f}", flush=True)
        save()

    aug = sanitizer_augmentation(args.dataset)
    for budget in args.budgets:
        for name in args.attacks:
            entry = results["attacks"][name]
            if str(budget) in entry["sanitized"]:
                continue
            tick = time.time()
            cfg = SanitizerConfig(steps=args.steps, second_steps=args.steps, augment=aug)
            _, meta = load_for(str(out / name), ds)
            reuse = reusable_second_endpoint([out, *map(pathlib.Path, args.second_endpoints)], budget, meta, ds, cfg)
            r = sanitize_run(ds, [str(out / name)], budget, str(out / f"sanitized-{name}-{budget}"), cfg,
                             backdoor=backdoor_of(meta), progress=args.progress, reuse_second_endpoint=reuse)
            mid = min(r["path"], key=lambda p: abs(p["t"] - 0.5))
            entry["sanitized"][str(budget)] = {
                "t": r["t"], "clean_accuracy": r["clean_accuracy"], "attack_success_rate": r["attack_success_rate"],
                "mid": {"t": mid["t"], "clean_accuracy": mid["clean_accuracy"],
                        "attack_success_rate": mid.get("attack_success_rate")},
                "second_endpoint": r["endpoints"][-1], "reused_second_endpoint": r["reused_second_endpoint"],
                "wall_seconds": round(time.time() - tick, 1)}
            print(f"sanitized {name} @ {budget}: t={r['t']} CA={r['clean_accuracy']:.4f} "
                  f"ASR={r['attack_success_rate']:.4f}", flush=True)
            save()


def reusable_second_endpoint(roots, budget: int, meta: dict, ds, cfg) -> str | None:
    """The first ``ROOT/sanitized-*-BUDGET/second-endpoint`` made for this budget, architecture and recipe."""
    record = second_endpoint_record(meta, ds.name, budget, 0, holdout_size(meta, ds.name), cfg)
    for root in roots:
        for d in sorted(root.glob(f"sanitized-*-{budget}/{SECOND_ENDPOINT_DIR}")):
            saved = json.loads((d / "model.json").read_text()).get("provenance", {}).get("second_endpoint")
            if saved == record:
                return str(d)
    return None


if __name__ == "__main__":
    main()
