"""Command-line commands for evasion attacks and defenses: ``robustness``, ``adv-train``, ``distill`` and
``path-robustness``.

``register(cli_group)`` adds them to the ``backdoorlab`` group (``backdoorlab.cli`` calls it). Errors follow the
CLI's convention: a :class:`BackdoorlabError` becomes one line ``error: ...`` and exit status 2.
"""

from __future__ import annotations

import functools
import json

import click

from .cli_device import device_options
from .cli_listing import RegistryCommand, architectures
from .cli_options import image_size_option, model_arch_option
from .errors import BackdoorlabError

_data_dir = click.option("--data-dir", default=None, type=click.Path(file_okay=False),
                         help="Data directory (default: $BACKDOORLAB_DATA, else a per-user cache directory).")
_no_progress = click.option("--no-progress", is_flag=True, help="Hide progress bars.")
_json = click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")


def _pct(v) -> str:
    return "   -  " if v is None else f"{100 * v:6.2f}%"


def _positive(value, name):
    if value is not None and value < 1:
        raise BackdoorlabError(f"{name} must be >= 1, got {value}")


def _train_config(ds, arch, epochs, lr, batch_size, schedule, weight_decay, augment, seed):
    from .runs import train_config

    return train_config(ds.name, arch, epochs, lr, batch_size, augment, schedule=schedule,
                        weight_decay=weight_decay, seed=seed)


def _finish_training(ds, arch, cfg, out, as_json, progress, eval_eps, eval_steps, eval_images, **defense):
    """Run the defended training (``defense``: its keywords, with ``device`` and ``amp``) and print the result."""
    from .evasion import parse_eps
    from .runs import defended_train_run

    _positive(eval_steps, "--eval-steps")
    _positive(eval_images, "--eval-images")
    eval_attack = {"eps": parse_eps(eval_eps), "steps": eval_steps} if eval_eps is not None else None
    _, meta = defended_train_run(ds, arch, cfg, out, progress=progress, eval_attack=eval_attack, eval_images=eval_images,
                             **defense)
    m = meta["metrics"]
    if as_json:
        click.echo(json.dumps({"clean_accuracy": m["clean_accuracy"],
                               "robust_accuracy": (m.get("pgd") or {}).get("robust_accuracy"),
                               "pgd": m.get("pgd"), "defense": meta["provenance"]["evasion_defense"], "out": out}))
        return
    click.echo(f"trained {arch} on {ds.name} in {meta['training']['seconds']:.0f} s -> {out}")
    click.echo(f"  clean accuracy            {_pct(m['clean_accuracy'])}")
    if m.get("pgd"):
        p = m["pgd"]
        click.echo(f"  robust accuracy (PGD l-inf eps {p['eps']:.4g}, {p['steps']} steps, first {p['n']} test images) "
                   f"{_pct(p['robust_accuracy'])}")


def adv_train(dataset, arch, eps, pgd_steps, step_size, norm, warmup, clean_fraction, epochs, lr, batch_size,
              schedule, weight_decay, augment, seed, out, eval_eps, eval_steps, eval_images, as_json, data_dir,
              no_progress, device, amp, image_size=None):
    """PGD adversarial training (Madry et al.): train a model on PGD adversarial examples of every batch.

    Writes OUT/model.safetensors + model.json (the defense recorded in its provenance). Use --eval-eps to measure
    robust accuracy right after training; `backdoorlab robustness OUT` measures it in full."""
    from .evasion import AdvTrainConfig
    from .runs.dataset import run_dataset

    ds = run_dataset(dataset, data_dir, image_size)
    cfg = _train_config(ds, arch, epochs, lr, batch_size, schedule, weight_decay, augment, seed)
    adv = AdvTrainConfig(eps=eps, steps=pgd_steps, step_size=step_size, norm=norm, warmup=warmup,
                         clean_fraction=clean_fraction)
    _finish_training(ds, arch, cfg, out, as_json, not no_progress, eval_eps, eval_steps, eval_images, adv=adv,
                     device=device, amp=amp)


def distill(dataset, arch, temperature, epochs, lr, batch_size, schedule, weight_decay, augment, seed, out,
            eval_eps, eval_steps, eval_images, as_json, data_dir, no_progress, device, amp, image_size=None):
    """Defensive distillation (Papernot et al.): a teacher trained at softmax temperature T, a student trained on
    its soft labels at T, deployed at temperature 1. Writes OUT/model.safetensors + model.json (the student).

    Evaluate it with `backdoorlab robustness OUT --loss margin`: cross-entropy gradients vanish on its saturated
    softmax, which makes plain PGD look defeated."""
    from .runs.dataset import run_dataset

    if temperature <= 0:
        raise BackdoorlabError(f"--temperature must be > 0, got {temperature}")
    ds = run_dataset(dataset, data_dir, image_size)
    cfg = _train_config(ds, arch, epochs, lr, batch_size, schedule, weight_decay, augment, seed)
    _finish_training(ds, arch, cfg, out, as_json, not no_progress, eval_eps, eval_steps, eval_images,
                     distill_temperature=temperature, device=device, amp=amp)


def robustness(model_dir, dataset, named_arch, attack, eps, steps, step_size, restarts, loss, target, n_images, batch_size,
               defense, jpeg_quality, bpda, patch_size, patch_steps, patch_images, pixels, max_iter, popsize, out,
               seed, as_json, data_dir, no_progress, device):
    """Clean and robust accuracy of a model under an evasion attack on the test set.

    Attacks: fgsm, pgd (l-inf), pgd-l2 (need --eps, e.g. 0.3 or 8/255), patch (a universal targeted adversarial
    patch trained on training images, needs --target; --out saves it as patch.png), one-pixel (differential
    evolution over --pixels pixels; slow, 100 images by default). Robust accuracy: the fraction of test images
    classified correctly both clean and attacked. --defense jpeg puts JPEG compression in front of the model;
    --bpda attacks it with the identity as the transform's gradient (Athalye et al.), the honest evaluation."""
    from .data.registry import canonical_name
    from .evasion import EVASION_ATTACKS
    from .models.checkpoint import checked_meta
    from .runs.dataset import run_dataset
    from .runs.robustness import check_robustness_options, robustness_run

    entry = EVASION_ATTACKS.entry(attack)
    parsed_eps = check_robustness_options(attack, eps, target, defense, bpda)
    for v, name in ((steps, "--steps"), (restarts, "--restarts"), (n_images, "--n-images"),
                    (batch_size, "--batch-size"), (pixels, "--pixels"), (patch_steps, "--patch-steps")):
        _positive(v, name)
    # the attack's settings from the flags its config declares (--step-size is parsed like an epsilon)
    flag_values = {"--steps": steps, "--step-size": step_size, "--restarts": restarts, "--loss": loss,
                   "--batch-size": batch_size, "--patch-size": patch_size, "--patch-steps": patch_steps,
                   "--pixels": pixels, "--max-iter": max_iter, "--popsize": popsize, "--seed": seed}
    settings = {field: flag_values[flag] for flag, field in entry.config.flags().items() if flag != "--target"}
    meta = checked_meta(model_dir, named_arch, None if dataset is None else canonical_name(dataset))
    ds = run_dataset(meta["dataset"], data_dir, model_dir=model_dir)
    result = robustness_run(ds, model_dir, attack, eps, target=target, settings=settings, n_images=n_images,
                            batch_size=batch_size, defense=defense, jpeg_quality=jpeg_quality, bpda=bpda,
                            patch_images=patch_images, out=out, seed=seed, progress=not no_progress, device=device,
                            arch=named_arch)
    r, n, eps = result, result["n"], parsed_eps
    if as_json:
        click.echo(json.dumps(result))
        return
    what = attack + (f" eps {eps:.4g}" if eps is not None else "")
    behind = f" behind JPEG q{jpeg_quality}" + (" (BPDA)" if bpda else "") if defense == "jpeg" else ""
    click.echo(f"{model_dir} on {ds.name} test set ({n} images), {what}{behind}:")
    click.echo(f"  clean accuracy   {_pct(r['clean_accuracy'])}   (loss {r['clean_loss']:.4f})")
    click.echo(f"  robust accuracy  {_pct(r['robust_accuracy'])}   (loss {r['robust_loss']:.4f})")
    if "attack_success_rate" in r:
        click.echo(f"  targeted success (images of other classes classified as {target}) "
                   f"{_pct(r['attack_success_rate'])}")
    if "patch_png" in r:
        click.echo(f"  patch saved to {r['patch_png']}")


def path_robustness(model_a, model_b, dataset, named_arch, out, eps, pgd_steps, step_size, curve, curve_steps,
                    curve_lr, grid, n_images, hessian_images, hessian_iters, curve_dir, seed, as_json, data_dir,
                    no_progress, device, amp):
    """Robustness along a curve between MODEL_A (t = 0) and MODEL_B (t = 1) (Zhao et al. 2020).

    Trains a curve on the clean training images (or reuses OUT's, or --curve-dir's curve.safetensors), then at
    each t reports clean loss and accuracy, robust loss and accuracy under PGD, and the mean largest eigenvalue of
    the input Hessian; writes OUT/path_robustness.json (with the Pearson correlations and the loss barriers),
    OUT/path_robustness.png, OUT/curve.safetensors and OUT/config.json."""
    from .evasion import parse_eps
    from .models.checkpoint import checked_meta
    from .runs import path_robustness_run
    from .runs.dataset import run_dataset

    eps = parse_eps(eps)
    for v, name in ((pgd_steps, "--pgd-steps"), (curve_steps, "--curve-steps"), (n_images, "--n-images"),
                    (hessian_images, "--hessian-images"), (hessian_iters, "--hessian-iters")):
        _positive(v, name)
    if grid < 2:
        raise BackdoorlabError(f"--grid must be >= 2, got {grid}")
    if dataset is None:
        dataset = checked_meta(model_a, named_arch)["dataset"]
    ds = run_dataset(dataset, data_dir, model_dir=model_a)
    s = path_robustness_run(ds, model_a, model_b, out, eps=eps, pgd_steps=pgd_steps,
                            step_size=parse_eps(step_size) if step_size is not None else None, curve=curve,
                            curve_steps=curve_steps, curve_lr=curve_lr, grid=grid, n_images=n_images,
                            hessian_images=hessian_images, hessian_iters=hessian_iters, curve_dir=curve_dir,
                            seed=seed, progress=not no_progress, device=device, amp=amp, arch=named_arch)
    if as_json:
        click.echo(json.dumps({k: s[k] for k in ("pearson", "barrier", "path", "curve_source")} | {"out": out}))
        return
    click.echo(f"{s['curve']} curve ({s['curve_source']}), PGD l-inf eps {eps:.4g}, {pgd_steps} steps, "
               f"{s['n_images']} test images -> {out}")
    click.echo(f"  {'t':>5} {'clean loss':>11} {'clean acc':>10} {'robust loss':>12} {'robust acc':>11} "
               f"{'top eig':>10}")
    for r in s["path"]:
        click.echo(f"  {r['t']:5.2f} {r['clean_loss']:11.4f} {_pct(r['clean_accuracy']):>10} {r['robust_loss']:12.4f} "
                   f"{_pct(r['robust_accuracy']):>11} {r['hessian_top_eigenvalue']:10.4g}")
    p = s["pearson"]
    click.echo(f"  Pearson r(robust loss, top eigenvalue) = {p['robust_loss_vs_eigenvalue']:.3f}; "
               f"r(clean loss, top eigenvalue) = {p['clean_loss_vs_eigenvalue']:.3f}")
    b = s["barrier"]
    click.echo(f"  barrier over the straight line between the endpoints: clean loss {b['clean_loss']['over_line']:.4f} "
               f"(t = {b['clean_loss']['at_t']:.2f}), robust loss {b['robust_loss']['over_line']:.4f} "
               f"(t = {b['robust_loss']['at_t']:.2f})")


def _command(group: click.Group, name: str, fn, options, listings=None) -> None:
    """Register ``fn`` under ``name`` with ``options`` (click decorators), on a fresh wrapper each time; with
    ``listings``, its help ends with those registries' entries (see :class:`cli_listing.RegistryCommand`)."""
    @functools.wraps(fn)
    def wrapper(**kwargs):
        return fn(**kwargs)

    for opt in reversed(options):
        wrapper = opt(wrapper)
    if listings:
        group.command(name, cls=RegistryCommand, listings=listings)(wrapper)
    else:
        group.command(name)(wrapper)


def _datasets():
    from .data import DATASETS
    return DATASETS.entries()


# what a training command's help lists: the names --dataset and --arch take
TRAIN_LISTINGS = [("Data sets (--dataset)", _datasets), ("Architectures (--arch)", architectures)]


def _evasion_attacks():
    from .evasion import EVASION_ATTACKS
    return EVASION_ATTACKS.entries()


def _train_option_list(extra):
    return [
        click.option("--dataset", required=True, help="One of the data sets listed below."),
        click.option("--arch", required=True, help="One of the architectures listed below."),
        *extra,
        click.option("--epochs", default=None, type=int,
                     help="Training epochs (default: per data set and architecture, as for train)."),
        click.option("--lr", default=None, type=float, help="Peak learning rate."),
        click.option("--batch-size", default=None, type=int),
        click.option("--schedule", default="onecycle", show_default=True, help="onecycle, cosine or constant."),
        click.option("--weight-decay", default=5e-4, show_default=True, type=float),
        click.option("--augment", default=None, help="none, crop, crop-flip, crop-flip-jpeg, jpeg, affine or affine-elastic."),
        click.option("--seed", default=0, show_default=True, type=int),
        click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory."),
        click.option("--eval-eps", default=None,
                     help="After training, measure robust accuracy under PGD at this l-inf radius (0.3, 8/255)."),
        click.option("--eval-steps", default=40, show_default=True, type=int, help="PGD steps of that evaluation."),
        click.option("--eval-images", default=1000, show_default=True, type=int,
                     help="Test images of that evaluation."),
        _json, _data_dir, _no_progress, device_options(), image_size_option,
    ]


def register(cli_group: click.Group) -> click.Group:
    """Add ``robustness``, ``adv-train``, ``distill`` and ``path-robustness`` to ``cli_group``; returns it.
    Calling it again on the same group is harmless."""
    if "robustness" in cli_group.commands:
        return cli_group
    _command(cli_group, "adv-train", adv_train, _train_option_list([
        click.option("--eps", default="0.3", show_default=True, help="Radius of the training attack (0.3, 8/255)."),
        click.option("--pgd-steps", default=10, show_default=True, type=int, help="PGD steps per batch."),
        click.option("--step-size", default=None, type=float, help="PGD step size (default 2.5 * eps / pgd-steps)."),
        click.option("--norm", default="linf", show_default=True, help="linf or l2."),
        click.option("--warmup", default=0.0, show_default=True, type=float,
                     help="Fraction of training over which eps grows linearly from 0."),
        click.option("--clean-fraction", default=0.0, show_default=True, type=float,
                     help="Fraction of each batch left clean."),
    ]), listings=TRAIN_LISTINGS)
    _command(cli_group, "distill", distill, _train_option_list([
        click.option("--temperature", default=100.0, show_default=True, type=float,
                     help="Softmax temperature T of teacher and student training."),
    ]), listings=TRAIN_LISTINGS)
    _command(cli_group, "robustness", robustness, [
        click.argument("model_dir", type=click.Path()),
        click.option("--dataset", default=None, help="Data set (default: the one in the model's sidecar)."),
        model_arch_option,
        click.option("--attack", default="pgd", show_default=True, help="One of the attacks listed below."),
        click.option("--eps", default=None, help="Radius in pixel units ([0, 1] images): 0.3, 8/255, ..."),
        click.option("--steps", default=40, show_default=True, type=int, help="pgd: steps per restart."),
        click.option("--step-size", default=None, help="pgd: step size (default 2.5 * eps / steps)."),
        click.option("--restarts", default=1, show_default=True, type=int, help="pgd: random restarts."),
        click.option("--loss", default="ce", show_default=True,
                     help="fgsm/pgd loss: ce (cross-entropy) or margin (logit margin, Carlini-Wagner)."),
        click.option("--target", default=None, type=int, help="Targeted attack towards this class."),
        click.option("--n-images", default=None, type=int,
                     help="Evaluate on the first N test images (default: all; one-pixel: 100)."),
        click.option("--batch-size", default=500, show_default=True, type=int),
        click.option("--defense", default="none", show_default=True, help="Input defense: none or jpeg."),
        click.option("--jpeg-quality", default=75, show_default=True, type=int),
        click.option("--bpda", is_flag=True, help="Attack the input defense with BPDA (identity backward pass)."),
        click.option("--patch-size", default=8, show_default=True, type=int, help="patch: side in pixels."),
        click.option("--patch-steps", default=500, show_default=True, type=int, help="patch: training steps."),
        click.option("--patch-images", default=2000, show_default=True, type=int,
                     help="patch: training images the patch is fitted on."),
        click.option("--pixels", default=1, show_default=True, type=int, help="one-pixel: pixels changed."),
        click.option("--max-iter", default=75, show_default=True, type=int, help="one-pixel: DE generations."),
        click.option("--popsize", default=80, show_default=True, type=int, help="one-pixel: DE population multiplier."),
        click.option("--out", default=None, type=click.Path(file_okay=False),
                     help="Write robustness.json (and patch.png) here."),
        click.option("--seed", default=0, show_default=True, type=int),
        _json, _data_dir, _no_progress, device_options(amp=False),
    ], listings=[("Attacks (--attack)", _evasion_attacks)])
    _command(cli_group, "path-robustness", path_robustness, [
        click.argument("model_a", type=click.Path()),
        click.argument("model_b", type=click.Path()),
        click.option("--dataset", default=None, help="Data set (default: the one in MODEL_A's sidecar)."),
        model_arch_option,
        click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory."),
        click.option("--eps", default="0.3", show_default=True, help="PGD l-inf radius (0.3, 8/255, ...)."),
        click.option("--pgd-steps", default=20, show_default=True, type=int),
        click.option("--step-size", default=None, help="PGD step size (default 2.5 * eps / steps)."),
        click.option("--curve", default="bezier", show_default=True, help="bezier or polychain."),
        click.option("--curve-steps", default=2000, show_default=True, type=int, help="Curve training steps."),
        click.option("--curve-lr", default=0.05, show_default=True, type=float),
        click.option("--grid", default=11, show_default=True, type=int, help="Number of t values on [0, 1]."),
        click.option("--n-images", default=1000, show_default=True, type=int, help="Test images per t."),
        click.option("--hessian-images", default=200, show_default=True, type=int,
                     help="Test images whose input-Hessian eigenvalue is averaged."),
        click.option("--hessian-iters", default=20, show_default=True, type=int, help="Power iterations."),
        click.option("--curve-dir", default=None, type=click.Path(file_okay=False),
                     help="Reuse the curve.safetensors in this directory (from path-robustness or sanitize)."),
        click.option("--seed", default=0, show_default=True, type=int),
        _json, _data_dir, _no_progress, device_options(),
    ])
    return cli_group
