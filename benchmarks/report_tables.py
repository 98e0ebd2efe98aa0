"""Render the Markdown tables of docs/benchmarks.md from benchmark results.json files.

    python benchmarks/report_tables.py bench-out/mnist/results.json [more results.json ...]
"""

from __future__ import annotations

import json
import sys


def pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}%"


def table(res: dict) -> str:
    lines = [f"### {res['dataset']}, {res['arch']}, BadNets {res['attack']['trigger']['size']}x"
             f"{res['attack']['trigger']['size']} {res['attack']['trigger']['position']}, target "
             f"{res['attack'].get('target')}, {100 * res['attack']['poison_rate']:.0f}% poisoned",
             "", f"Machine: {res['machine']}", "",
             "| model | clean budget | t | CA | ASR | RA | wall time |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for seed, e in sorted(res.get("endpoints", {}).items()):
        lines.append(f"| backdoored endpoint (seed {seed}) | - | - | {pct(e['clean_accuracy'])} | "
                     f"{pct(e['attack_success_rate'])} | {pct(e['robust_accuracy'])} | {e['seconds']:.0f} s (training) |")
    names = {"two": "sanitized, two suspect models", "one": "sanitized, one suspect model",
             "finetune": "fine-tuned suspect (baseline)", "two-midpoint": "sanitized, two models, midpoint init",
             "two-polychain": "sanitized, two models, polygonal chain",
             "two-scratch": "sanitized, two models, control point from a scratch-trained model"}
    defenses = res.get("defenses", {})
    for key in sorted(defenses, key=lambda k: (int(k.split("@")[1]), list(names).index(k.split("@")[0]))):
        variant, budget = key.split("@")
        r = defenses[key]
        t = "-" if r.get("t") is None else f"{r['t']:.2f}"
        lines.append(f"| {names[variant]} | {budget} | {t} | {pct(r['clean_accuracy'])} | "
                     f"{pct(r['attack_success_rate'])} | {pct(r.get('robust_accuracy'))} | {r['wall_seconds']:.0f} s |")
        if variant == "one":
            e = r["path"][-1]  # t = 1: the second endpoint, trained from scratch, batch norm re-estimated
            lines.append(f"| its second endpoint alone: trained from scratch on the budget (t = 1) | {budget} | 1.00 | "
                         f"{pct(e['clean_accuracy'])} | {pct(e['attack_success_rate'])} | "
                         f"{pct(e.get('robust_accuracy'))} | (included above) |")
    return "\n".join(lines)


def path_table(res: dict, key: str) -> str:
    r = res["defenses"][key]
    rows = ["| t | " + " | ".join(f"{p['t']:.2f}" for p in r["path"]) + " |",
            "| --- |" + " --- |" * len(r["path"]),
            "| val. acc. (budget) | " + " | ".join(pct(p["val_accuracy"]) for p in r["path"]) + " |",
            "| CA (test) | " + " | ".join(pct(p["clean_accuracy"]) for p in r["path"]) + " |",
            "| ASR (test) | " + " | ".join(pct(p.get("attack_success_rate")) for p in r["path"]) + " |"]
    return "\n".join(rows)


if __name__ == "__main__":
    for path in sys.argv[1:]:
        res = json.load(open(path))
        print(table(res))
        print()
        for key in res.get("defenses", {}):
            if not key.startswith("finetune"):
                print(f"Path of `{key}` (chosen t = {res['defenses'][key]['t']:.2f}):\n")
                print(path_table(res, key))
                print()
