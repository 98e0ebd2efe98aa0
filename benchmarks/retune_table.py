"""Post-purification robustness of several repaired models: the retuning attack (``backdoorlab retune``, its
default setting) on each, beside a clean control of the same recipe, as a table.

    python benchmarks/retune_table.py --dataset mnist --control bench-out/suspects/mnist-clean \
        --models suspect=bench-out/mnist-suspects/badnets sanitizer=bench-out/.../badnets-mode-connectivity ... \
        --out bench-out/retune-mnist-badnets

Every model is retuned on the same retuning set (the seed fixes it) and measured with the backdoor its sidecar
records; the control is retuned on that set too. Writes OUT/results.json (with the command and machine) and
prints a markdown table: CA / ASR before, CA / ASR after, and the post-retune ASR's distance to the control's.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import platform
import sys
import time

import torch

from backdoorlab.data import load_dataset
from backdoorlab.defenses.retune import RetuneConfig
from backdoorlab.io import atomic_write_json
from backdoorlab.runs import retune_run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", required=True)
    parser.add_argument("--control", required=True, help="A clean model of the suspects' recipe.")
    parser.add_argument("--models", nargs="+", required=True, metavar="NAME=DIR")
    parser.add_argument("--out", required=True, type=pathlib.Path)
    parser.add_argument("--seed", type=int, default=0, help="Which images form the retuning set.")
    args = parser.parse_args()

    ds = load_dataset(args.dataset)
    cfg = RetuneConfig(seed=args.seed)
    rows = {}
    for item in args.models:
        name, _, model_dir = item.partition("=")
        tick = time.time()
        report = retune_run(ds, model_dir, str(args.out / name), control_dir=args.control, cfg=cfg, progress=False)
        rows[name] = {k: report[k] for k in ("clean_accuracy", "attack_success_rate", "post_retune_clean_accuracy",
                                             "post_retune_attack_success_rate", "control")}
        rows[name] |= {"model": model_dir, "seconds": round(time.time() - tick, 1)}
        print(f"{name}: {json.dumps(rows[name])}", file=sys.stderr)
    machine = (f"{platform.machine()}, {platform.processor() or 'cpu'}, torch {torch.__version__}, "
               f"{torch.get_num_threads()} threads")
    atomic_write_json(args.out / "results.json", {"command": "python " + " ".join(sys.argv), "machine": machine,
                                                  "dataset": args.dataset, "control": args.control,
                                                  "config": cfg.to_dict(), "rows": rows})
    pct = lambda v: "-" if v is None else f"{100 * v:.2f}"  # noqa: E731
    print("| model | CA / ASR | after retuning: CA / ASR | control after retuning: ASR | distance |")
    print("| --- | --- | --- | --- | --- |")
    for name, r in rows.items():
        control = r["control"]["post_retune_attack_success_rate"]
        gap = 100 * (r["post_retune_attack_success_rate"] - control)
        print(f"| {name} | {pct(r['clean_accuracy'])} / {pct(r['attack_success_rate'])} | "
              f"{pct(r['post_retune_clean_accuracy'])} / {pct(r['post_retune_attack_success_rate'])} | "
              f"{pct(control)} | {gap:+.2f} |")


if __name__ == "__main__":
    main()
