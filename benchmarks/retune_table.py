"""Post-purification robustness of several repaired models: the retuning attack (``backdoorlab retune``, its
default setting) on each, beside a clean control of the same recipe, as a table.

    python benchmarks/retune_table.py --dataset mnist --control bench-out/suspects/mnist-clean \
        --suspect bench-out/suspects/mnist-badnets \
        --models suspect=bench-out/mnist-suspects/badnets sanitizer=bench-out/.../badnets-mode-connectivity ... \
        --out bench-out/retune-mnist-badnets
    python benchmarks/retune_table.py --table OUT1/results.json OUT2/results.json ... --max-drop 2 [--paths] \
        [--plot paths.png --plot-rows NAME ...]

Every model is retuned on the same retuning set (the seed fixes it) and measured with the backdoor its sidecar
records; the control is retuned once, on that set too. With ``--suspect`` each row also records CA and ASR along
the line from the suspect to the model. Writes OUT/results.json (with the command and machine) after every row
(a rerun resumes) and prints a markdown table: CA / ASR before, CA / ASR after, and the post-retune ASR's
distance to the control's.

``--table`` reads one results.json per seed (the same row names in each) and prints the mean over them of every
figure, each seed's distance, and whether the row meets the post-purification target: distance to the control
at most ``--max-distance`` points at a CA drop from the suspect (the row named ``suspect``) of at most
``--max-drop`` points, for every seed.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import statistics
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from common import machine, open_results  # noqa: E402

KEYS = ("clean_accuracy", "attack_success_rate", "post_retune_clean_accuracy", "post_retune_attack_success_rate")


def pct(v) -> str:
    return "-" if v is None else f"{100 * v:.2f}"


def distance(row: dict, control: dict) -> float:
    """Post-retune ASR minus the control's, in points."""
    return 100 * (row["post_retune_attack_success_rate"] - control["post_retune_attack_success_rate"])


def render_one(res: dict) -> str:
    control = res["control_report"]
    qra = any(r.get("qra") for r in res["rows"].values())
    lines = ["| model | CA / ASR | after retuning: CA / ASR | control after retuning: ASR | distance |"
             + (" QRA: ASR on the model / on the control, CA |" if qra else ""),
             "| --- | --- | --- | --- | --- |" + (" --- |" if qra else "")]
    for name, r in res["rows"].items():
        q = r.get("qra")
        extra = (f" {pct(q['attack_success_rate'])} / {pct(q['control_attack_success_rate'])}, "
                 f"{pct(q['clean_accuracy'])} |" if q else " - |") if qra else ""
        lines.append(f"| {name} | {pct(r['clean_accuracy'])} / {pct(r['attack_success_rate'])} | "
                     f"{pct(r['post_retune_clean_accuracy'])} / {pct(r['post_retune_attack_success_rate'])} | "
                     f"{pct(control['post_retune_attack_success_rate'])} | {distance(r, control):+.2f} |" + extra)
    return "\n".join(lines)


def render_seeds(results: list[dict], max_distance: float, max_drop: float) -> str:
    """The mean over seeds of every row present in all of them, each seed's distance, and the target check."""
    names = [n for n in results[0]["rows"] if all(n in r["rows"] for r in results)]
    mean = lambda values: statistics.fmean(values)  # noqa: E731
    lines = [f"Mean over {len(results)} seed(s); distance = post-retune ASR minus the control's, per seed; "
             f"target: distance <= {max_distance:g} and CA drop <= {max_drop:g} points on every seed.", "",
             "| model | CA | ASR | after retuning: CA | after retuning: ASR | distance per seed | CA drop per seed | "
             "met? |", "| --- | --- | --- | --- | --- | --- | --- | --- |"]
    controls = [r["control_report"] for r in results]
    lines.append(f"| clean control | {pct(mean([c['clean_accuracy'] for c in controls]))} | "
                 f"{pct(mean([c['attack_success_rate'] for c in controls]))} | "
                 f"{pct(mean([c['post_retune_clean_accuracy'] for c in controls]))} | "
                 f"{pct(mean([c['post_retune_attack_success_rate'] for c in controls]))} | - | - | - |")
    for name in names:
        rows = [r["rows"][name] for r in results]
        gaps = [distance(row, r["control_report"]) for row, r in zip(rows, results)]
        drops = [100 * (r["rows"]["suspect"]["clean_accuracy"] - row["clean_accuracy"]) if "suspect" in r["rows"]
                 else None for row, r in zip(rows, results)]
        met = all(g <= max_distance for g in gaps) and all(d is not None and d <= max_drop for d in drops)
        lines.append(f"| {name} | {pct(mean([r['clean_accuracy'] for r in rows]))} | "
                     f"{pct(mean([r['attack_success_rate'] for r in rows]))} | "
                     f"{pct(mean([r['post_retune_clean_accuracy'] for r in rows]))} | "
                     f"{pct(mean([r['post_retune_attack_success_rate'] for r in rows]))} | "
                     f"{', '.join(f'{g:+.2f}' for g in gaps)} | "
                     f"{', '.join('-' if d is None else f'{d:.2f}' for d in drops)} | "
                     f"{'-' if name == 'suspect' else ('yes' if met else 'no')} |")
    return "\n".join(lines)


def render_paths(results: list[dict]) -> str:
    """ASR along the line from the suspect to each repaired model, at every t between, one cell per seed."""
    names = [n for n in results[0]["rows"] if n != "suspect" and all(r["rows"].get(n, {}).get("suspect_path")
                                                                     for r in results)]
    if not names:
        return ""
    ts = [p["t"] for p in results[0]["rows"][names[0]]["suspect_path"]][1:-1]
    lines = ["| model | " + " | ".join(f"ASR at t = {t:g}" for t in ts) + " |", "| --- |" + " --- |" * len(ts)]
    for name in names:
        cells = [", ".join(f"{100 * r['rows'][name]['suspect_path'][i]['attack_success_rate']:.1f}" for r in results)
                 for i in range(1, len(ts) + 1)]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_paths(res: dict, out: str, names: list[str] | None = None) -> None:
    """One figure, two panels: the ASR along the line from the suspect to each repaired model, and from each
    repaired model to its retuned self (the two legs of the backdoor-connected path), one line per row."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from backdoorlab.io import save_figure_png

    fig, axes = plt.subplots(1, 2, figsize=(11, 4.2), dpi=120, sharey=True)
    shown = [(name, r) for name, r in res["rows"].items() if not names or name in names]
    for i, (name, r) in enumerate(shown):
        for ax, key in zip(axes, ("suspect_path", "path")):
            rows = r.get(key)
            if rows:  # one colour per row in both panels (the suspect has no path from itself)
                ax.plot([p["t"] for p in rows], [100 * p["attack_success_rate"] for p in rows], "o-",
                        color=f"C{i % 10}", label=name)
    axes[0].set_xlabel("t   (0 = the suspect, 1 = the repaired model)")
    axes[1].set_xlabel("t   (0 = the repaired model, 1 = after the retuning attack)")
    axes[0].set_ylabel("attack success rate (test), %")
    control = 100 * res["control_report"]["post_retune_attack_success_rate"]
    axes[1].axhline(control, color="grey", ls="--", lw=1, label="clean control after retuning")
    for ax in axes:
        ax.set_ylim(-3, 103)
        ax.grid(alpha=0.3)
    axes[1].legend(fontsize=7, loc="upper left")
    fig.suptitle(f"backdoor-connected path, {res['dataset']}", fontsize=10)
    save_figure_png(fig, out)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--table", nargs="+", help="Only print the table of these results.json (one per seed).")
    parser.add_argument("--plot", help="With --table: draw the first results.json's paths into this PNG.")
    parser.add_argument("--paths", action="store_true",
                        help="With --table: also the ASR along the line from the suspect to each model, per seed.")
    parser.add_argument("--plot-rows", nargs="+", help="The rows to draw (default: all).")
    parser.add_argument("--max-distance", type=float, default=10.0)
    parser.add_argument("--max-drop", type=float, default=2.0)
    parser.add_argument("--dataset")
    parser.add_argument("--control", help="A clean model of the suspects' recipe.")
    parser.add_argument("--suspect", help="The suspect the repaired models came from (for the path to each).")
    parser.add_argument("--models", nargs="+", metavar="NAME=DIR")
    parser.add_argument("--out", type=pathlib.Path)
    parser.add_argument("--seed", type=int, default=0, help="Which images form the retuning set.")
    parser.add_argument("--path-points", type=int, default=5)
    parser.add_argument("--qra", action="store_true", help="Also run the query-based reactivation attack.")
    args = parser.parse_args()
    if args.table:
        results = [json.loads(pathlib.Path(p).read_text()) for p in args.table]
        print(render_seeds(results, args.max_distance, args.max_drop))
        if args.paths:
            print("\n" + render_paths(results))
        if args.plot:
            plot_paths(results[0], args.plot, args.plot_rows)
        return
    if not (args.dataset and args.control and args.models and args.out):
        parser.error("--dataset, --control, --models and --out are required")

    from backdoorlab.data import load_dataset
    from backdoorlab.defenses.qra import QRAConfig
    from backdoorlab.defenses.retune import RetuneConfig
    from backdoorlab.runs import retune_run

    out, results, save = open_results(str(args.out))
    ds = load_dataset(args.dataset)
    cfg = RetuneConfig(seed=args.seed)
    results.update(command="python benchmarks/retune_table.py " + " ".join(sys.argv[1:]), machine=machine(),
                   dataset=args.dataset, control=args.control, config=cfg.to_dict())
    results.setdefault("rows", {})
    for item in args.models:
        name, _, model_dir = item.partition("=")
        if name in results["rows"]:
            continue
        saved = out / name / "report.json"
        first = results.get("control_report") is None
        tick = time.time()
        if saved.exists():  # retuned by an earlier run whose table was not saved: read its report
            report = json.loads(saved.read_text())
            if first and report.get("control") is None:
                saved.unlink()  # no control in it: retune again, this time with the control
        if not saved.exists():
            report = retune_run(ds, model_dir, str(out / name), cfg=cfg, progress=False,
                                control_dir=args.control if first or args.qra else None,
                                path_points=args.path_points,
                                suspect_dir=args.suspect if args.suspect and name != "suspect" else None,
                                qra=QRAConfig() if args.qra else None)
        if first:
            results["control_report"] = {k: report["control"][k] for k in KEYS} | {"model": args.control}
        # results["rows"] is looked up afresh: a save replaces the dicts it holds with the merged ones
        results["rows"][name] = {**{k: report[k] for k in KEYS}, "model": model_dir, "path": report["path"],
                                 "suspect_path": report["suspect_path"], "seconds": report["seconds"],
                                 "qra": ({k: v for k, v in report["qra"].items() if k != "config"}
                                         if report.get("qra") else None)}
        print(f"{name}: {json.dumps({k: report[k] for k in KEYS})} in {time.time() - tick:.0f} s",
              file=sys.stderr, flush=True)
        save()
    print(render_one(results))


if __name__ == "__main__":
    main()
