"""Robustness along a curve in weight space (Zhao et al., ICLR 2020, section 5).

Between a regular and an adversarially trained model, a curve trained on clean data shows no barrier in clean
loss, but the robust (adversarial) loss along it need not behave the same way; Zhao et al. find it correlates with
the largest eigenvalue of the input Hessian. :func:`path_robustness` measures, at each t of a grid, clean loss and
accuracy, robust loss and accuracy under PGD, and the mean top input-Hessian eigenvalue, with batch-norm
statistics re-estimated at every t. :func:`path_robustness_run` trains the curve (or reuses a saved one) and writes
``path_robustness.json``, ``path_robustness.png``, ``curve.safetensors`` and ``config.json``.
"""

from __future__ import annotations

import json
import pathlib
import time

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

    from ..io import atomic_path

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
    fig.tight_layout()
    with atomic_path(out) as tmp:
        fig.savefig(tmp, format="png")
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


def path_robustness_run(dataset, model_a: str, model_b: str, out: str, *, eps: float = 0.3, pgd_steps: int = 20,
                        step_size: float | None = None, curve: str = "bezier", curve_steps: int = 2000,
                        curve_lr: float = 0.05, curve_augment: str = "none", grid: int = 11, n_images: int = 1000,
                        hessian_images: int = 200, hessian_iters: int = 20, curve_dir: str | None = None,
                        seed: int = 0, progress: bool = True) -> dict:
    """Train (or reuse) a curve between checkpoints ``model_a`` (t = 0) and ``model_b`` (t = 1) on the clean
    training images, then measure :func:`path_robustness` on the first ``n_images`` test images.

    The curve is reused from ``curve_dir`` (a directory with ``curve.safetensors``, written by this function or
    by ``backdoorlab sanitize``), or from ``out`` when a previous run there trained it for the same models and
    curve settings. Batch norm is re-estimated at each t on 2,000 training images."""
    import safetensors.torch

    from .. import __version__
    from ..budget import training_part
    from ..curves import Curve
    from ..defenses import ModeConnectivitySanitizer, SanitizerConfig
    from ..io import atomic_path, atomic_write_json
    from ..models import create_model
    from ..models.sidecar import holdout_size
    from ..pipeline import load_for

    (a, meta_a), (b, meta_b) = load_for(model_a, dataset), load_for(model_b, dataset)
    if (meta_a["arch"], meta_a["arch_args"]) != (meta_b["arch"], meta_b["arch_args"]):
        raise BackdoorlabError(f"the two models have different architectures ({meta_a['arch']} vs {meta_b['arch']}); "
                               f"a curve needs two models of the same architecture")
    if n_images < 2:
        raise BackdoorlabError(f"--n-images must be >= 2, got {n_images}")
    out_dir = pathlib.Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    x_train, y_train = training_part(dataset, holdout_size(meta_a, dataset.name))
    cfg = SanitizerConfig(curve=curve, steps=curve_steps, lr=curve_lr, augment=curve_augment, seed=seed)
    curve_spec = {"models": [str(model_a), str(model_b)], "curve": curve, "steps": curve_steps, "lr": curve_lr,
                  "augment": curve_augment, "seed": seed, "train_images": len(y_train)}
    arch, args = meta_a["arch"], meta_a["arch_args"]
    factory = lambda: create_model(arch, **args)  # noqa: E731
    seconds = {}
    tick = time.time()
    previous = out_dir / "config.json"
    reuse = None
    if curve_dir is not None:
        reuse = pathlib.Path(curve_dir) / "curve.safetensors"
        if not reuse.exists():
            raise BackdoorlabError(f"no curve.safetensors in {curve_dir}")
    elif (out_dir / "curve.safetensors").exists() and previous.exists():
        try:
            if json.loads(previous.read_text()).get("curve") == curve_spec:
                reuse = out_dir / "curve.safetensors"
        except (OSError, ValueError):
            reuse = None
    if reuse is not None:
        kind = safetensors.safe_open(str(reuse), "pt").metadata() or {}
        c = Curve(a, b, kind=kind.get("curve", curve), init="midpoint")
        _load_control(c, reuse)
        curve_source = str(reuse)
    else:
        sanitizer = ModeConnectivitySanitizer(cfg, factory, progress=progress)
        from ..budget import CleanBudget
        c = sanitizer.fit_curve(a, b, CleanBudget(x_train, y_train, torch.arange(len(y_train))))
        curve_source = "trained"
        control = {k: v.detach().contiguous() for k, v in zip(c.names, c.control)}
        with atomic_path(out_dir / "curve.safetensors") as tmp:
            safetensors.torch.save_file(control, str(tmp), metadata={"curve": curve})
    seconds["curve"] = round(time.time() - tick, 1)
    tick = time.time()
    bn = x_train[torch.randperm(len(y_train), generator=torch.Generator().manual_seed(seed))[:2000]]
    n = min(n_images, len(dataset.test_y))
    rows = path_robustness(c, bn, dataset.test_x[:n], dataset.test_y[:n], eps, pgd_steps, step_size, grid,
                           hessian_images, hessian_iters, seed, progress)
    seconds["path"] = round(time.time() - tick, 1)
    pgd = PGD(a, eps, steps=pgd_steps, step_size=step_size, seed=seed).config()
    summary = {"models": [str(model_a), str(model_b)], "dataset": dataset.name, "curve": c.kind,
               "curve_source": curve_source, "attack": pgd, "n_images": n,
               "hessian": {"images": min(hessian_images, n), "iters": hessian_iters}, **summarize(rows),
               "seconds": seconds, "path": rows}
    config = {"command": "path-robustness", "curve": curve_spec, "curve_source": curve_source, "attack": pgd,
              "grid": grid, "n_images": n, "hessian_images": hessian_images, "hessian_iters": hessian_iters,
              "backdoorlab_version": __version__}
    if reuse is not None and reuse != out_dir / "curve.safetensors":
        config["curve"] = {**curve_spec, "reused_from": curve_source}
    atomic_write_json(previous, config)
    atomic_write_json(out_dir / "path_robustness.json", summary)
    plot_path_robustness(rows, out_dir / "path_robustness.png", eps=eps,
                         title=f"{c.kind} curve between {pathlib.Path(model_a).name} (t=0) and "
                               f"{pathlib.Path(model_b).name} (t=1), {dataset.name}; PGD eps {eps:g}, "
                               f"{pgd_steps} steps")
    return summary
