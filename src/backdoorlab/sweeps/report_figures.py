"""figures/<dataset>.png: per data set, the defenses' CA drop against the ASR left after them."""

from __future__ import annotations

import pathlib
from typing import Any

from ..io import save_figure_png
from .report_format import defense_labels, first_seen, is_ok, number, safe_name

_MARKERS = "osD^v<>pP*Xh"


def figure_points(rows: list[dict]) -> list[dict]:
    """The points of one data set's figure: per (defense column, attack), the mean CA drop (points) and mean ASR
    after (%) over the seeds of its ok defense rows that have both numbers. Each point is a dict with
    ``defense``, ``attack``, ``x``, ``y`` and ``n`` (how many rows it averages), in first-seen order. When the
    rows span several architectures the attack's label names the architecture, so they are not averaged."""
    defenses = [r for r in rows if r.get("kind") == "defense" and is_ok(r)]
    labels = defense_labels(defenses)
    many_archs = len({r.get("arch") for r in defenses}) > 1
    sums: dict[tuple, list[float]] = {}
    for r in defenses:
        x, y = number(r.get("ca_drop")), number(r.get("attack_success_rate"))
        if x is None or y is None:
            continue
        attack = f"{r.get('attack')} ({r.get('arch')})" if many_archs else str(r.get("attack"))
        acc = sums.setdefault((labels[r["cell"]], attack), [0.0, 0.0, 0])
        acc[0] += 100 * x
        acc[1] += 100 * y
        acc[2] += 1
    return [{"defense": d, "attack": a, "x": sx / n, "y": sy / n, "n": n} for (d, a), (sx, sy, n) in sums.items()]


def write_figure(path: pathlib.Path, dataset: Any, points: list[dict]) -> None:
    """Write one data set's figure (PNG, atomically): CA drop against ASR after, colour per defense, marker per
    attack, with a legend for each. Uses matplotlib's object API (no pyplot), so no global state changes."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    defenses = first_seen(p["defense"] for p in points)
    attacks = first_seen(p["attack"] for p in points)
    colour = {d: f"C{i % 10}" for i, d in enumerate(defenses)}
    marker = {a: _MARKERS[i % len(_MARKERS)] for i, a in enumerate(attacks)}
    fig = Figure(figsize=(7.2, 4.4), dpi=110)
    ax = fig.add_subplot()
    for p in points:
        ax.scatter([p["x"]], [p["y"]], color=colour[p["defense"]], marker=marker[p["attack"]], s=55,
                   edgecolors="black", linewidths=0.5, zorder=3)
    handles = [Patch(color=colour[d], label=d) for d in defenses]
    handles += [Line2D([], [], ls="", marker=marker[a], color="grey", label=a) for a in attacks]
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0,
              title="defense (colour), attack (marker)", title_fontsize=8)
    ax.axvline(0, color="grey", lw=0.6)
    ax.set_ylim(-3, 103)
    ax.set_xlabel("CA drop (points: suspect's CA minus CA after the defense)")
    ax.set_ylabel("ASR after the defense (%)")
    ax.set_title(f"{dataset}: defenses, mean over seeds", fontsize=10)
    ax.grid(alpha=0.3)
    save_figure_png(fig, path)


def write_figures(folder: pathlib.Path, rows: list[dict]) -> dict[Any, str]:
    """Write ``figures/<dataset>.png`` for each data set with at least one ok defense row that has a CA drop
    and an ASR; returns {data set: path relative to the results folder} for those written."""
    written: dict[Any, str] = {}
    for dataset in first_seen(r.get("dataset") for r in rows):
        points = figure_points([r for r in rows if r.get("dataset") == dataset])
        if not points:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{safe_name(dataset)}.png"
        write_figure(folder / name, dataset, points)
        written[dataset] = f"{folder.name}/{name}"
    return written
