"""Plots: clean accuracy and attack success rate along a curve (the paper's figure) or a straight line."""

from __future__ import annotations

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402

from .io import save_figure_png  # noqa: E402


def chosen_text(t: float, ensemble: list[float] | None = None, prefix: str = "t = ") -> str:
    """How a sanitizer's choice reads in tables and plots: 't = 0.50', or for an average 't = 0.20 + 0.80'."""
    return prefix + " + ".join(f"{u:.2f}" for u in (ensemble or [t]))


def plot_path(rows: list[dict], chosen_t: float, out, title: str = "", one_suspect: bool = False,
              ensemble: list[float] | None = None, exported: dict | None = None) -> None:
    """Write a PNG of test CA, ASR (when known) and budget validation accuracy against t, with the chosen t
    (or the ts of the exported average, ``ensemble``). ``exported`` (the exported model's test metrics) is
    drawn as stars when that model is not a point of the path (refined, or an average): at the chosen t, or at
    both averaged ts joined by a dashed line."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    _draw_path(ax, rows, chosen_t, ensemble, exported)
    ax.set_xlabel("t   (0 = suspect model, 1 = model trained on the clean budget)" if one_suspect
                  else "t   (0 = suspect model 1, 1 = suspect model 2)")
    if title:
        ax.set_title(title, fontsize=10)
    _save(fig, out)


def plot_stages(stages: list[dict], out, exported: dict | None = None, title: str = "") -> None:
    """Write a PNG with one panel per sanitizer stage (each a dict with ``path``, ``t``, ``ensemble``, ``start``
    and ``end``, as :class:`~backdoorlab.defenses.SanitizeResult` lists them); ``exported`` is drawn on the last
    panel, the one the exported model was chosen on."""
    fig, axes = plt.subplots(1, len(stages), figsize=(6.4 * len(stages), 4.0), dpi=120, squeeze=False)
    for i, (ax, stage) in enumerate(zip(axes[0], stages)):
        last = i == len(stages) - 1
        _draw_path(ax, stage["path"], stage["t"], stage.get("ensemble"), exported if last else None)
        ax.set_xlabel(f"t   (0 = {stage['start']}, 1 = {stage['end']})", fontsize=8)
        ax.set_title(f"stage {stage['stage']}" + (f": {title}" if title and i == 0 else ""), fontsize=10)
    _save(fig, out)


def plot_line(rows: list[dict], out, xlabel: str, title: str = "") -> None:
    """Write a PNG of test CA and ASR against t along a straight line between two models (``rows``: dicts with
    ``t``, ``clean_accuracy`` and ``attack_success_rate``), such as the retuning attack's backdoor-connected
    path."""
    fig, ax = plt.subplots(figsize=(6.4, 4.0), dpi=120)
    ts = [r["t"] for r in rows]
    ax.plot(ts, [100 * r["clean_accuracy"] for r in rows], "o-", color="tab:blue", label="clean accuracy (test)")
    if rows[0].get("attack_success_rate") is not None:
        ax.plot(ts, [100 * r["attack_success_rate"] for r in rows], "s-", color="tab:red",
                label="attack success rate (test)")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("%")
    ax.set_ylim(-3, 103)
    ax.set_xlim(-0.02, 1.02)
    ax.grid(alpha=0.3)
    ax.legend(loc="center right", fontsize=8)
    if title:
        ax.set_title(title, fontsize=10)
    _save(fig, out)


def _save(fig, out) -> None:
    save_figure_png(fig, out)
    plt.close(fig)


def _draw_path(ax, rows: list[dict], chosen_t: float, ensemble: list[float] | None, exported: dict | None) -> None:
    """One path on ``ax``: test CA and ASR, validation accuracy, the chosen t or averaged ts, and the exported
    model's stars (see :func:`plot_path`)."""
    ts = [r["t"] for r in rows]
    if "clean_accuracy" in rows[0]:
        ax.plot(ts, [100 * r["clean_accuracy"] for r in rows], "o-", color="tab:blue", label="clean accuracy (test)")
    if rows[0].get("attack_success_rate") is not None:
        ax.plot(ts, [100 * r["attack_success_rate"] for r in rows], "s-", color="tab:red",
                label="attack success rate (test)")
    ax.plot(ts, [100 * r["val_accuracy"] for r in rows], ":", color="tab:gray", label="validation accuracy (budget)")
    label = ("chosen " if not ensemble else "averaged ") + chosen_text(chosen_t, ensemble)
    where = ensemble or [chosen_t]
    for i, t in enumerate(where):
        ax.axvline(t, color="k", lw=1, ls="--", label=label if i == 0 else None)
    for key, color, name in (("clean_accuracy", "tab:blue", "CA"), ("attack_success_rate", "tab:red", "ASR")):
        if exported is None or exported.get(key) is None:
            continue
        y = 100 * exported[key]
        ax.plot(where, [y] * len(where), "*--", color=color, ms=12, mec="k", mew=0.6, lw=1,
                label=f"exported model ({'average' if ensemble else 'refined'}): {name} {y:.2f}%")
    ax.set_ylabel("%")
    ax.set_ylim(-3, 103)
    ax.set_xlim(-0.02, 1.02)  # keep a chosen t of 0 or 1 visible
    ax.grid(alpha=0.3)
    ax.legend(loc="center right", fontsize=8)
