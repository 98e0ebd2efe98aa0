"""Benchmark: attacks x defenses on one data set, all with the same clean budget and seeds.

Rows are suspect models (a clean model of the same recipe, then one per attack), columns are repairers:
none, fine-tuning, feature shift tuning (FST), fine-pruning, ANP, Neural Cleanse unlearning, I-BAU, Gaussian weight noise, and the mode-connectivity
sanitizer with one suspect model and with two (the second suspect is trained with the same attack and another
seed; not possible for attacks on one trained model's weights). Cells: CA / ASR after the defense and wall time.
Every defense runs with its defaults (``backdoorlab list --defaults``); ``nc-unlearning-per-batch`` is Neural
Cleanse unlearning with ``stamp=per-batch`` instead of the paper's fixed stamped subset, and
``nc-unlearning-boost`` adds ``mask_boost=3`` (stamped masks strengthened by a random factor in [1, 3]) and
``nc-unlearning-complete`` also ``complete_steps=200`` (the reversed trigger grown towards its strongest version
before stamping); ``nc-unlearning-grow`` is the boost with ``grow_gain=0.5`` instead (neighbouring pixels added
one by one while each raises the target margin by 0.5 logits) (VARIANTS).

The suspects come from the attacks benchmark's output (``--models``, e.g. bench-out/attacks-mnist); missing
second suspects are trained here. Results go to OUT/results.json after every cell; a rerun resumes.

    python benchmarks/attacks_benchmark.py --dataset mnist --arch small-cnn --budgets 1000 --out bench-out/attacks-mnist
    python benchmarks/defenses_benchmark.py --dataset mnist --arch small-cnn --budget 1000 \\
        --models bench-out/attacks-mnist --out bench-out/defenses-mnist
    python benchmarks/defenses_benchmark.py --table bench-out/defenses-mnist/results.json
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys
import time

from backdoorlab.defenses.repair import REPAIRERS

VARIANTS = {  # benchmark column -> (repairer, options other than its defaults)
    "nc-unlearning-per-batch": ("nc-unlearning", {"stamp": "per-batch"}),
    "nc-unlearning-boost": ("nc-unlearning", {"stamp": "per-batch", "mask_boost": 3.0}),
    "nc-unlearning-complete": ("nc-unlearning", {"stamp": "per-batch", "mask_boost": 3.0, "complete_steps": 200}),
    "nc-unlearning-grow": ("nc-unlearning", {"stamp": "per-batch", "mask_boost": 3.0, "grow_gain": 0.5}),
    "mode-connectivity-scratch": ("mode-connectivity", {"second_endpoint": "scratch"}),
    "mode-connectivity-stages-2": ("mode-connectivity", {"stages": 2}),
    "mode-connectivity-two": ("mode-connectivity", {}),  # with a second suspect model
}
# the table's columns: every registered repairer, each followed by its variants
DEFENSES = tuple(c for name in REPAIRERS for c in (name, *[v for v, (r, _) in VARIANTS.items() if r == name]))
ROWS = ("clean", "badnets", "blended", "dynamic", "badnets-all-to-all", "weight-perturbation")
LABELS = {"finetune": "fine-tuning", "fst": "FST", "fine-pruning": "fine-pruning", "anp": "ANP", "nc-unlearning": "NC unlearning",
          "nc-unlearning-per-batch": "NC unlearning, per-batch stamping",
          "nc-unlearning-boost": "NC unlearning, per-batch, mask boost 3",
          "nc-unlearning-complete": "NC unlearning, per-batch, boost 3, completed trigger",
          "nc-unlearning-grow": "NC unlearning, per-batch, boost 3, grown trigger", "i-bau": "I-BAU",
          "noise": "weight noise", "mode-connectivity": "mode conn., 1 model (permuted)",
          "mode-connectivity-scratch": "mode conn., 1 model (scratch)",
          "mode-connectivity-stages-2": "mode conn., 1 model (permuted, 2 stages)",
          "mode-connectivity-two": "mode conn., 2 models"}


def pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def render(res: dict) -> str:
    cols = ["none", *[d for d in DEFENSES if any(d in r.get("defenses", {}) for r in res["rows"].values())]]
    lines = [f"Machine: {res['machine']}; clean budget {res['budget']} images; cells: CA / ASR (%) and wall time.",
             "", "| suspect | " + " | ".join(LABELS.get(c, c) for c in cols) + " |",
             "| --- |" + " --- |" * len(cols)]
    for name, r in res["rows"].items():
        cells = [f"{pct(r['clean_accuracy'])} / {pct(r.get('attack_success_rate'))}"]
        for c in cols[1:]:
            d = r.get("defenses", {}).get(c)
            if d is None:
                cells.append("n/a" if c == "mode-connectivity-two" and name in NO_SECOND else "not run")
            else:
                warned = " (warned)" if d.get("warnings") else ""
                cells.append(f"{pct(d['clean_accuracy'])} / {pct(d.get('attack_success_rate'))}{warned}, "
                             f"{d['seconds']:.0f} s")
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


NO_SECOND = ("weight-perturbation", "fault-injection", "single-bias")


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", help="Only print the Markdown table of this results.json.")
    ap.add_argument("--dataset")
    ap.add_argument("--arch")
    ap.add_argument("--budget", type=int, default=1000)
    ap.add_argument("--models", help="Directory with the suspects (clean/, badnets/, ...) of attacks_benchmark.py.")
    ap.add_argument("--out")
    ap.add_argument("--rows", nargs="+", default=list(ROWS))
    ap.add_argument("--defenses", nargs="+", default=list(DEFENSES), choices=list(DEFENSES))
    ap.add_argument("--seed", type=int, default=2, help="seed of the second suspect model")
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args()
    if args.table:
        print(render(json.loads(pathlib.Path(args.table).read_text())))
        return
    if not (args.dataset and args.arch and args.models and args.out):
        ap.error("--dataset, --arch, --models and --out are required")

    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    from attacks_benchmark import TRAINED
    from common import machine, open_results

    from backdoorlab.attacks import backdoor_of
    from backdoorlab.data import load_dataset
    from backdoorlab.models import load_for
    from backdoorlab.runs import repair_run, train_defaults, train_run
    from backdoorlab.train import TrainConfig

    out, results, save = open_results(args.out)
    results.update(dataset=args.dataset, arch=args.arch, budget=args.budget, machine=machine(),
                   command="python benchmarks/defenses_benchmark.py " + " ".join(sys.argv[1:]))
    results.setdefault("rows", {})
    ds = load_dataset(args.dataset)
    shape = (ds.in_channels, *ds.image_size)
    models = pathlib.Path(args.models)
    for name in args.rows:
        suspect = models / name
        if not (suspect / "model.json").exists():
            print(f"skip {name}: no model at {suspect}", flush=True)
            continue
        _, meta = load_for(str(suspect), ds)
        backdoor = backdoor_of(meta)
        if backdoor is None:  # the clean row: measure what the defenses would do to a backdoor of the usual kind
            backdoor = TRAINED["badnets"](shape).backdoor
        row = results["rows"].setdefault(name, {})
        from backdoorlab.metrics import evaluate
        row.update({k: v for k, v in evaluate(load_for(str(suspect), ds)[0], ds.test_x, ds.test_y, backdoor,
                                              ds.num_classes).items() if k != "n_test"})
        row.setdefault("defenses", {})
        save()
        for d in args.defenses:
            if d in row["defenses"]:
                continue
            dirs = [str(suspect)]
            if d == "mode-connectivity-two":
                if name in NO_SECOND:
                    continue
                second = out / "second" / name
                if not (second / "model.json").exists():
                    td = train_defaults(args.dataset, args.arch)
                    td.setdefault("augment", "none")
                    attack = TRAINED[name](shape) if name in TRAINED else None
                    train_run(ds, args.arch, TrainConfig(seed=args.seed, **td), attack, out=str(second),
                              progress=args.progress, desc=f"{name} seed {args.seed}")
                dirs.append(str(second))
            tick = time.time()
            repairer, options = VARIANTS.get(d, (d, {}))
            where = str(out / "repaired" / f"{name}-{d}")
            r = repair_run(ds, repairer, dirs, args.budget, where, options=options, backdoor=backdoor,
                           progress=args.progress)
            cell = {k: r["after"].get(k) for k in ("clean_accuracy", "attack_success_rate", "robust_accuracy")}
            if "summary" in r:  # a defense that traces a path (the sanitizer): its choice and warnings
                cell["info"] = {k: r["summary"][k] for k in ("t", "ensemble", "refined_steps", "verdict", "seconds")}
                cell["warnings"] = r["summary"]["warnings"]
            else:
                cell["info"] = {k: v for k, v in r["info"].items()
                                if k not in ("path", "config", "prune_curve", "pruned_channels")}
            row["defenses"][d] = {**cell, "seconds": round(time.time() - tick, 1)}
            print(f"{name} / {d}: CA {cell['clean_accuracy']:.4f} ASR {cell.get('attack_success_rate')} "
                  f"in {row['defenses'][d]['seconds']:.0f} s", flush=True)
            save()
    print(render(results))


if __name__ == "__main__":
    main()
