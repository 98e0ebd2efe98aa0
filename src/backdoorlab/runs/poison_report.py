"""The files ``backdoorlab detect-poison --out DIR`` writes: ``config.json``, ``scores.png`` (per label, the
distribution of the detector's scores, the threshold at 1 and, when the poisoned images are known, which are
poisoned) and ``flagged.png`` (the flagged training images, most suspicious first, so that a trigger shows);
every file atomically. ``detection.json`` is written by the run itself."""

from __future__ import annotations

import pathlib

import numpy as np
import torch

from ..io import atomic_write_json, save_figure_png
from ..png import save_png
from ..tensors import to_float

GRID_COLUMNS = 8
GRID_ROWS = 4


def plot_scores(scores: np.ndarray, labels: np.ndarray, poisoned: np.ndarray | None, names: list[str], title: str,
                out) -> None:
    """One histogram of scores per label (log counts); poisoned samples in red when known; the flagging threshold
    (score 1) dashed."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    present = np.unique(labels)
    cols = min(5, len(present))
    rows = int(np.ceil(len(present) / cols))
    fig, axes = plt.subplots(rows, cols, figsize=(2.6 * cols, 2.1 * rows), dpi=110, squeeze=False)
    truth = np.zeros(len(scores), dtype=bool)
    if poisoned is not None:
        truth[poisoned] = True
    finite = scores[np.isfinite(scores)]
    lo, hi = (float(finite.min()), float(finite.max())) if len(finite) else (0.0, 1.0)
    bins = np.linspace(min(lo, 0.0), max(hi, 1.5), 40)
    for ax, lab in zip(axes.flat, present):
        mask = labels == lab
        parts = [scores[mask & ~truth]] + ([scores[mask & truth]] if poisoned is not None else [])
        colors = ["tab:blue"] + (["tab:red"] if poisoned is not None else [])
        ax.hist(parts, bins=bins, color=colors, stacked=True, log=True)
        ax.axvline(1.0, color="k", lw=1, ls="--")
        ax.set_title(f"label {names[int(lab)] if int(lab) < len(names) else int(lab)}", fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in list(axes.flat)[len(present):]:
        ax.axis("off")
    legend = "score > 1: flagged" + ("; red: poisoned (from the sidecar)" if poisoned is not None else "")
    fig.suptitle(f"{title}\n{legend}", fontsize=9)
    save_figure_png(fig, out)
    plt.close(fig)


def flagged_grid(x: torch.Tensor, flagged: np.ndarray, scores: np.ndarray) -> torch.Tensor | None:
    """Up to 32 flagged images, highest score first, tiled 8 per row with a one-pixel gap (None when none is
    flagged)."""
    if len(flagged) == 0:
        return None
    order = flagged[np.argsort(-scores[flagged], kind="stable")][:GRID_COLUMNS * GRID_ROWS]
    imgs = to_float(x[torch.as_tensor(order, dtype=torch.long)])
    n, c, h, w = imgs.shape
    cols = min(GRID_COLUMNS, n)
    rows = int(np.ceil(n / cols))
    grid = torch.ones(c, rows * (h + 1) - 1, cols * (w + 1) - 1)
    for i, img in enumerate(imgs):
        r, k = divmod(i, cols)
        grid[:, r * (h + 1):r * (h + 1) + h, k * (w + 1):k * (w + 1) + w] = img
    return grid


def write_detection(out: pathlib.Path, result: dict, detection, x: torch.Tensor, labels: np.ndarray,
                    poisoned: np.ndarray | None, names: list[str]) -> None:
    """Write config.json, scores.png and flagged.png (when anything is flagged) to ``out``."""
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "config.json", result["config"])
    title = f"{result['detector']}: {result['flagged']} of {result['training_images']} training images flagged"
    plot_scores(np.asarray(detection.scores, dtype=np.float64), labels, poisoned, names, title, out / "scores.png")
    grid = flagged_grid(x, np.asarray(detection.flagged, dtype=np.int64), np.asarray(detection.scores))
    if grid is not None:
        save_png(grid, out / "flagged.png", scale=2 if x.shape[-1] >= 64 else 3)
