"""One figure for several `backdoorlab federated` runs: the global model's ASR (top) and CA (bottom) per round,
one line per run, so that a reader sees how a backdoor planted in one round decays with and without a defense.

    python benchmarks/federated_plot_runs.py OUT.png RUN [RUN ...] [--root DIR] [--title TEXT]

Each RUN is a federated run's --out folder (relative to --root), read from its rounds.json, and labelled by its
name; ``LABEL=FOLDER`` gives it another label.
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys

from backdoorlab.errors import BackdoorlabError
from backdoorlab.io import save_figure_png


def read_rounds(folder: pathlib.Path) -> list[dict]:
    """The per-round records of the federated run in ``folder``."""
    path = folder / "rounds.json"
    try:
        return json.loads(path.read_text())["rounds"]
    except (OSError, ValueError, KeyError) as exc:
        raise BackdoorlabError(f"{path}: not a federated run's rounds.json ({exc})") from None


def plot_runs(runs: dict[str, list[dict]], out, title: str = "") -> None:
    """Write a PNG with ASR and CA per round, one line per run; the rounds every run attacks are shaded, and a run's
    other attack rounds are marked with crosses on its ASR line."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, (ax_asr, ax_ca) = plt.subplots(2, 1, figsize=(7.0, 6.0), dpi=120, sharex=True)
    attacked = {name: {r["round"] for r in rounds if r.get("attack_round")} for name, rounds in runs.items()}
    common = set.intersection(*attacked.values()) if attacked else set()
    for ax in (ax_asr, ax_ca):
        for r in sorted(common):
            ax.axvspan(r - 0.5, r + 0.5, color="tab:red", alpha=0.06, lw=0)
        ax.grid(alpha=0.3)
    for name, rounds in runs.items():
        rounds = [r for r in rounds if r.get("clean_accuracy") is not None]  # rounds skipped by --evaluate-every
        x = [r["round"] for r in rounds]
        asr = [100 * (r["attack_success_rate"] or 0.0) for r in rounds]
        line, = ax_asr.plot(x, asr, "o-", ms=3, label=name)
        extra = [(r, a) for r, a in zip(x, asr) if r in attacked[name] - common]
        if extra:
            ax_asr.plot(*zip(*extra), "x", ms=7, color=line.get_color(), label=f"{name}: attack rounds")
        ax_ca.plot(x, [100 * r["clean_accuracy"] for r in rounds], "o-", ms=3, label=name)
    ax_asr.set_ylabel("ASR, % of triggered test images")
    ax_asr.set_ylim(-2, 102)
    ax_asr.legend(fontsize=8, loc="best")
    ax_ca.set_ylabel("CA, % of the test set")
    ax_ca.set_xlabel("round (0: the starting model; shaded: every run attacks)")
    ax_ca.xaxis.set_major_locator(MaxNLocator(integer=True))
    if title:
        ax_asr.set_title(title, fontsize=9)
    save_figure_png(fig, out)
    plt.close(fig)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out")
    parser.add_argument("runs", nargs="+")
    parser.add_argument("--root", default=".")
    parser.add_argument("--title", default="")
    args = parser.parse_args(argv)
    try:
        labelled = [run.split("=", 1) if "=" in run else (run, run) for run in args.runs]
        runs = {label: read_rounds(pathlib.Path(args.root) / folder) for label, folder in labelled}
    except BackdoorlabError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    plot_runs(runs, args.out, args.title)
    return 0


if __name__ == "__main__":
    sys.exit(main())
