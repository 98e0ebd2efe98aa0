"""Render the Markdown tables of docs/benchmarks.md from benchmark results.json files.

    python benchmarks/report_tables.py bench-out/mnist/results.json [more results.json ...]
    python benchmarks/report_tables.py --attacks bench-out/attacks-mnist/results.json
    python benchmarks/report_tables.py --attacks --merge RUN_A/results.json RUN_B/results.json ...

``--merge`` puts the attacks of several runs of the same data set and architecture (one attack per run, say, on
separate cores) in one table, each row saying which run it came from; the machines and commands follow it.
"""

from __future__ import annotations

import json
import sys

from backdoorlab.report import chosen_text


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
        t = "-" if r.get("t") is None else chosen_text(r["t"], r.get("ensemble"), prefix="")
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


ATTACK_NOTES = {
    "weight-perturbation": "epsilon {eps}; agreement with the clean model {agree}; mean relative weight change {rel}",
    "fault-injection": "5 chosen test images; ASR = chosen images flipped; accuracy on the rest {rest}",
    "single-bias": "1 chosen test image; accuracy on the rest {rest}",
    "triggerless": "ASR with the target neurons dropped; fires on {fire} of queries, {queries} expected queries",
}


def merge_attack_results(results: list[dict]) -> dict:
    """One results dict from several attack runs: attacks in the given order (a name seen twice gets the run
    number appended), the first clean model found, and each attack's ``run`` (1-based)."""
    if len({(r["dataset"], r["arch"]) for r in results}) > 1:
        raise SystemExit("--merge takes runs of one data set and architecture")
    merged = {"dataset": results[0]["dataset"], "arch": results[0]["arch"], "attacks": {},
              "clean": next((r["clean"] for r in results if r.get("clean")), None), "runs": results}
    for i, r in enumerate(results, 1):
        for name, a in r["attacks"].items():
            merged["attacks"][name if name not in merged["attacks"] else f"{name} (run {i})"] = {**a, "run": i}
    return merged


def attack_table(res: dict) -> str:
    if res.get("runs"):  # merged: say which run each row is from, then list the runs
        table_text = attack_table({**res, "runs": None, "machine": "see the runs below", "command": None})
        runs = "\n".join(f"{i}. {r['machine']}; `{r.get('command', '')}`" for i, r in enumerate(res["runs"], 1))
        return table_text + "\n\nRuns:\n\n" + runs
    clean = res.get("clean")
    budgets = sorted({int(b) for a in res["attacks"].values() for b in a.get("sanitized", {})})
    head = "| attack | CA | CA drop | ASR | " + " | ".join(
        f"sanitized @ {b}: t, CA, ASR | path middle @ {b}: CA, ASR" for b in budgets) + " | notes |"
    lines = [f"### {res['dataset']}, {res['arch']}: attacks and the one-model sanitizer", "",
             f"Machine: {res['machine']}." + (f" Command: `{res['command']}`" if res.get("command") else ""), "",
             (f"Clean model of the same recipe (seed {res.get('seed')}): CA {pct(clean['clean_accuracy'])}."
              if clean else "No clean model in this run (`--no-clean`): no CA drop."), "",
             head, "| --- " * (5 + 2 * len(budgets)) + "|"]
    for name, a in res["attacks"].items():
        drop = f"{100 * (clean['clean_accuracy'] - a['clean_accuracy']):.2f}" if clean else "-"
        cells = [name, pct(a["clean_accuracy"]), drop,
                 pct(a["attack_success_rate"])]
        for b in budgets:
            s = a.get("sanitized", {}).get(str(b))
            if s is None:
                cells += ["not run", "not run"]
                continue
            cells.append(f"{s['t']:.2f}, {pct(s['clean_accuracy'])}, {pct(s['attack_success_rate'])}")
            cells.append(f"{pct(s['mid']['clean_accuracy'])}, {pct(s['mid']['attack_success_rate'])}")
        r = a.get("relative_weight_change") or {}
        note = ATTACK_NOTES.get(name, "").format(
            eps=a.get("epsilon"), agree=pct(a.get("agreement")),
            rel=f"{r.get('mean', float('nan')):.3g}", rest=pct(a.get("accuracy_on_rest")),
            fire=pct(a.get("fire_probability")),
            queries="-" if a.get("expected_queries") is None else f"{a['expected_queries']:.0f}")
        if "attack_success_rate_per_target" in a:
            note = "per target: " + ", ".join(f"{k}: {pct(v)}" for k, v in a["attack_success_rate_per_target"].items())
        if "attack_success_rate_per_source" in a:
            note = "per source label: " + ", ".join(f"{k}: {pct(v)}" for k, v in a["attack_success_rate_per_source"].items())
        if "run" in a:
            note = "; ".join(v for v in (f"run {a['run']}", a.get("attack", {}).get("stamp") and
                                         f"stamp {a['attack']['stamp']}", note) if v)
        cells.append(note)
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


if __name__ == "__main__":
    if sys.argv[1:3] == ["--attacks", "--merge"]:
        print(attack_table(merge_attack_results([json.load(open(path)) for path in sys.argv[3:]])))
        sys.exit(0)
    if sys.argv[1:2] == ["--attacks"]:
        for path in sys.argv[2:]:
            print(attack_table(json.load(open(path))))
            print()
        sys.exit(0)
    for path in sys.argv[1:]:
        res = json.load(open(path))
        print(table(res))
        print()
        for key in res.get("defenses", {}):
            if not key.startswith("finetune"):
                r = res["defenses"][key]
                print(f"Path of `{key}` (chosen {chosen_text(r['t'], r.get('ensemble'))}):\n")
                print(path_table(res, key))
                print()
