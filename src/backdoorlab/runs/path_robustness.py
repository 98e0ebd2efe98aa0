"""``backdoorlab path-robustness``: train (or reuse) a curve between two checkpoints and measure clean and
robust loss and accuracy and the input-Hessian eigenvalue along it (:mod:`backdoorlab.evasion.path`); writes
``path_robustness.json``, ``path_robustness.png``, ``curve.safetensors`` and ``config.json``."""

from __future__ import annotations

import json
import pathlib
import time

import safetensors
import safetensors.torch
import torch

from .. import __version__
from ..budget import CleanBudget, training_part
from ..curves import Curve
from ..defenses import ModeConnectivitySanitizer, SanitizerConfig
from ..device import computes_on_device
from ..errors import BackdoorlabError
from ..evasion.path import _load_control, path_robustness, plot_path_robustness, summarize
from ..evasion.pgd import PGD
from ..io import atomic_path, atomic_write_json
from ..models import check_same_architecture, create_model, load_for
from ..models.sidecar import holdout_size


@computes_on_device
def path_robustness_run(dataset, model_a: str, model_b: str, out: str, *, eps: float = 0.3, pgd_steps: int = 20,
                        step_size: float | None = None, curve: str = "bezier", curve_steps: int = 2000,
                        curve_lr: float = 0.05, curve_augment: str = "none", grid: int = 11, n_images: int = 1000,
                        hessian_images: int = 200, hessian_iters: int = 20, curve_dir: str | None = None,
                        seed: int = 0, progress: bool = True, device=None, arch: str | None = None) -> dict:
    """Train (or reuse) a curve between checkpoints ``model_a`` (t = 0) and ``model_b`` (t = 1) on the clean
    training images, then measure :func:`path_robustness` on the first ``n_images`` test images.

    The curve is reused from ``curve_dir`` (a directory with ``curve.safetensors``, written by this function or
    by ``backdoorlab sanitize``), or from ``out`` when a previous run there trained it for the same models and
    curve settings. Batch norm is re-estimated at each t on 2,000 training images."""
    (a, meta_a), (b, meta_b) = load_for(model_a, dataset, arch), load_for(model_b, dataset, arch)
    a, b = a.to(device), b.to(device)
    check_same_architecture(meta_a, meta_b)
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
        c = sanitizer.fit_curve(a, b, CleanBudget(x_train, y_train, torch.arange(len(y_train))))
        curve_source = "trained"
        control = {k: v.detach().cpu().contiguous() for k, v in zip(c.names, c.control)}
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
