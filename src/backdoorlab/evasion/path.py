"""Robustness along a curve in weight space (Zhao et al., ICLR 2020, section 5).

Between a regular and an adversarially trained model, a curve trained on clean data shows no barrier in clean
loss, but the robust (adversarial) loss along it need not behave the same way; Zhao et al. find it correlates with
the largest eigenvalue of the input Hessian. :func:`path_robustness` measures, at each t of a grid, clean loss and
accuracy, robust loss and accuracy under PGD, and the mean top input-Hessian eigenvalue, with batch-norm
statistics re-estimated at every t. The run that trains the curve (or reuses a saved one) and writes its outputs
is :func:`backdoorlab.runs.path_robustness_run`.
"""

from __future__ import annotations

import pathlib

import torch
from tqdm.auto import tqdm

from ..errors import BackdoorlabError
from .hessian import input_hessian_top_eigenvalue
from .pgd import PGD
from .robustness import robust_accuracy


def pearson(a, b) -> float:
    """Pearson correlation of two equal-length sequences (nan if either is constant)."""
    a, b = torch.as_tensor(list(a), dtype=torch.float64), torch.as_tensor(list(b), dtype=torch.float64)
    if len(a) != len(b) or len(a) < 2:
        raise BackdoorlabError("Pearson correlation needs two sequences of the same length >= 2")
    a, b = a - a.mean(), b - b.mean()
    den = a.norm() * b.norm()
    return float((a * b).sum() / den) if den > 0 else float("nan")


def barrier(ts, values) -> dict:
    """How far ``values`` along the path rise above the endpoints: ``over_endpoints`` = max(values) - max(first,
    last); ``over_line`` = max over t of values(t) - the straight line between the endpoint values (> 0: a
    barrier), and the t where it peaks."""
    ts, v = list(map(float, ts)), list(map(float, values))
    line = [v[0] + (v[-1] - v[0]) * (t - ts[0]) / (ts[-1] - ts[0]) for t in ts]
    excess = [a - b for a, b in zip(v, line)]
    i = max(range(len(v)), key=lambda k: excess[k])
    return {"over_endpoints": max(v) - max(v[0], v[-1]), "over_line": excess[i], "at_t": ts[i]}


def path_robustness(curve, bn_data: torch.Tensor, x: torch.Tensor, y: torch.Tensor, eps: float, pgd_steps: int = 20,
                    step_size: float | None = None, grid: int = 11, hessian_images: int = 200,
                    hessian_iters: int = 20, seed: int = 0, progress: bool = True) -> list[dict]:
    """Rows, one per t in ``linspace(0, 1, grid)``: clean and robust (PGD l-inf ``eps``) loss and accuracy on
    (``x``, ``y``), and the mean/median top input-Hessian eigenvalue over the first ``hessian_images`` images."""
    if grid < 2:
        raise BackdoorlabError(f"the t grid needs at least 2 points, got {grid}")
    rows = []
    for t in tqdm(torch.linspace(0, 1, grid).tolist(), desc="path", disable=not progress, leave=False):
        model = curve.model_at(t, bn_data=bn_data)
        r = robust_accuracy(model, PGD(model, eps, steps=pgd_steps, step_size=step_size, seed=seed), x, y)
        k = min(hessian_images, len(y))
        eig = input_hessian_top_eigenvalue(model, x[:k], y[:k], iters=hessian_iters, seed=seed)
        rows.append({"t": round(t, 6), "clean_loss": r["clean_loss"], "clean_accuracy": r["clean_accuracy"],
                     "robust_loss": r["robust_loss"], "robust_accuracy": r["robust_accuracy"],
                     "hessian_top_eigenvalue": eig.mean().item(), "hessian_top_eigenvalue_median": eig.median().item()})
    return rows


def summarize(rows: list[dict]) -> dict:
    ts = [r["t"] for r in rows]
    eig = [r["hessian_top_eigenvalue"] for r in rows]
    return {"pearson": {"robust_loss_vs_eigenvalue": pearson([r["robust_loss"] for r in rows], eig),
                        "clean_loss_vs_eigenvalue": pearson([r["clean_loss"] for r in rows], eig),
                        "robust_accuracy_vs_eigenvalue": pearson([r["robust_accuracy"] for r in rows], eig)},
            "barrier": {k: barrier(ts, [r[k] for r in rows]) for k in ("clean_loss", "robust_loss")}}


def plot_path_robustness(rows: list[dict], out, title: str = "", eps: float | None = None) -> None:
    """Two panels: losses, accuracies and the eigenvalue against t; robust loss against the eigenvalue."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from ..io import save_figure_png

    ts = [r["t"] for r in rows]
    eig = [r["hessian_top_eigenvalue"] for r in rows]
    fig, (ax, ax3) = plt.subplots(1, 2, figsize=(11, 4.2), dpi=110)
    ax.plot(ts, [r["clean_loss"] for r in rows], "o-", color="tab:blue", label="clean loss")
    ax.plot(ts, [r["robust_loss"] for r in rows], "s-", color="tab:red", label="robust loss (PGD)")
    ax.set_xlabel("t   (0 = model A, 1 = model B)")
    ax.set_ylabel("cross-entropy")
    ax.set_yscale("symlog", linthresh=0.1)
    ax2 = ax.twinx()
    ax2.plot(ts, [100 * r["clean_accuracy"] for r in rows], ":", color="tab:blue", label="clean accuracy")
    ax2.plot(ts, [100 * r["robust_accuracy"] for r in rows], ":", color="tab:red", label="robust accuracy")
    ax2.plot(ts, [100 * e / max(max(eig), 1e-12) for e in eig], "^--", color="tab:green",
             label=f"top input-Hessian eigenvalue (% of max {max(eig):.3g})")
    ax2.set_ylabel("%")
    ax2.set_ylim(-3, 103)
    h1, l1 = ax.get_legend_handles_labels()
    h2, l2 = ax2.get_legend_handles_labels()
    ax.legend(h1 + h2, l1 + l2, fontsize=7, loc="upper left")
    ax.grid(alpha=0.3)
    s = summarize(rows)
    ax3.scatter(eig, [r["robust_loss"] for r in rows], c=ts, cmap="viridis")
    for r in rows:
        ax3.annotate(f"{r['t']:.1f}", (r["hessian_top_eigenvalue"], r["robust_loss"]), fontsize=7)
    ax3.set_xlabel("mean top eigenvalue of the input Hessian")
    ax3.set_ylabel("robust loss" + (f" (PGD, eps {eps:g})" if eps else ""))
    ax3.set_title(f"Pearson r = {s['pearson']['robust_loss_vs_eigenvalue']:.3f}", fontsize=10)
    ax3.grid(alpha=0.3)
    if title:
        fig.suptitle(title, fontsize=10)
    save_figure_png(fig, out)
    plt.close(fig)


def _load_control(curve, path: pathlib.Path) -> None:
    import safetensors.torch

    saved = safetensors.torch.load_file(str(path))
    if set(saved) != set(curve.names):
        raise BackdoorlabError(f"the saved curve {path} does not fit these models (different parameter names)")
    with torch.no_grad():
        for k, p in zip(curve.names, curve.control):
            if saved[k].shape != p.shape:
                raise BackdoorlabError(f"the saved curve {path} does not fit these models ({k}: "
                                       f"{list(saved[k].shape)} vs {list(p.shape)})")
            p.copy_(saved[k])
