"""Benchmark: one defense on one suspect, over several draws of the clean budget, for each of a few option sets.

A defense's CA and ASR depend on which clean images the defender happens to hold. One draw can put a defense on
either side of a target by chance; this script repeats the defense with ``--budget-seed`` 0, 1, 2, ... (the same
draws for every option set, so the variants are compared on equal terms) and reports each run and the mean.

    python benchmarks/budget_seeds.py --dataset mnist --model bench-out/attacks-mnist/badnets \\
        --defense nc-unlearning --budget 1000 --seeds 0 1 2 \\
        --variants '{}' '{"stamp": "per-batch"}' --out bench-out/budget-seeds/nc-unlearning

Each run is what ``backdoorlab repair DEFENSE MODEL --dataset D --clean-budget N --budget-seed S -o KEY=VALUE``
gives. Results go to OUT/results.json after every run; a rerun skips what is done.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time


def pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def render(res: dict) -> str:
    seeds = res["seeds"]
    lines = [f"Machine: {res['machine']}; {res['defense']} on {res['model']}, clean budget {res['budget']} images; "
             "cells: CA / ASR (%).", "",
             "| options | " + " | ".join(f"budget seed {s}" for s in seeds) + " | mean CA / ASR |",
             "| --- |" + " --- |" * (len(seeds) + 1)]
    for key, runs in res["variants"].items():
        done = [runs[str(s)] for s in seeds if str(s) in runs]
        cells = [f"{pct(runs[str(s)]['clean_accuracy'])} / {pct(runs[str(s)].get('attack_success_rate'))}"
                 if str(s) in runs else "not run" for s in seeds]
        asr = [r["attack_success_rate"] for r in done if r.get("attack_success_rate") is not None]
        mean = (f"{pct(statistics.mean(r['clean_accuracy'] for r in done))} / "
                f"{pct(statistics.mean(asr)) if asr else '-'}") if done else "-"
        lines.append(f"| `{key}` | " + " | ".join(cells) + f" | {mean} |")
    return "\n".join(lines)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--table", help="Only print the Markdown table of this results.json.")
    ap.add_argument("--dataset")
    ap.add_argument("--model", help="The suspect model's directory.")
    ap.add_argument("--defense")
    ap.add_argument("--budget", type=int, default=1000)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2], help="budget seeds")
    ap.add_argument("--variants", nargs="+", default=["{}"],
                    help="option sets as JSON objects ('{}': the defense's defaults)")
    ap.add_argument("--out")
    ap.add_argument("--progress", action="store_true")
    args = ap.parse_args()
    if args.table:
        print(render(json.loads(pathlib.Path(args.table).read_text())))
        return
    if not (args.dataset and args.model and args.defense and args.out):
        ap.error("--dataset, --model, --defense and --out are required")
    try:
        variants = [json.loads(v) for v in args.variants]
    except json.JSONDecodeError as e:
        ap.error(f"--variants takes JSON objects: {e}")
    if not all(isinstance(v, dict) for v in variants):
        ap.error("--variants takes JSON objects, e.g. '{\"stamp\": \"per-batch\"}'")

    sys.path.insert(0, str(pathlib.Path(__file__).parent))
    from common import machine, open_results

    from backdoorlab.data import load_dataset
    from backdoorlab.defenses.repair import repairer_config
    from backdoorlab.errors import BackdoorlabError
    from backdoorlab.runs import repair_run

    for v in variants:  # an unknown defense or option fails here, before any work
        try:
            repairer_config(args.defense, **v)
        except BackdoorlabError as e:
            ap.error(str(e))
    out, results, save = open_results(args.out)
    results.update(dataset=args.dataset, model=args.model, defense=args.defense, budget=args.budget,
                   seeds=args.seeds, machine=machine(),
                   command="python benchmarks/budget_seeds.py " + " ".join(sys.argv[1:]))
    results.setdefault("variants", {})
    ds = load_dataset(args.dataset)
    for v in variants:
        key = json.dumps(v, sort_keys=True)
        runs = results["variants"].setdefault(key, {})
        for s in args.seeds:
            if str(s) in runs:
                continue
            tick = time.time()
            r = repair_run(ds, args.defense, [args.model], args.budget, options=v, budget_seed=s,
                           progress=args.progress)
            runs[str(s)] = {"clean_accuracy": r["after"]["clean_accuracy"],
                            "attack_success_rate": r["after"].get("attack_success_rate"),
                            "suspect": {k: r["before"][0].get(k) for k in ("clean_accuracy", "attack_success_rate")},
                            "seconds": round(time.time() - tick, 1)}
            print(f"{key} budget seed {s}: CA {pct(runs[str(s)]['clean_accuracy'])}% "
                  f"ASR {pct(runs[str(s)]['attack_success_rate'])}% in {runs[str(s)]['seconds']:.0f} s", flush=True)
            save()
    print(render(results))


if __name__ == "__main__":
    main()
