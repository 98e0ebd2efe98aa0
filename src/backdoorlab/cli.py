"""The ``backdoorlab`` command line.

User errors (bad files, unknown names, impossible budgets, mismatched checkpoints) print one line on stderr,
``error: ...``, and exit with status 2; an interrupt exits with status 130. Nothing is written half-way.
"""

from __future__ import annotations

import json
import sys
import warnings

import click

from .errors import BackdoorlabError, valid_names


def _warning_line(message, category, filename, lineno, line=None):
    return f"warning: {message}\n"


def _dataset(name: str, data_dir):
    from .data import load_dataset
    return load_dataset(name, data_dir)  # an unknown name is a one-line error listing the valid ones


def _pct(v) -> str:
    return "   -  " if v is None else f"{100 * v:6.2f}%"


def _backdoor_options(f):
    options = [
        click.option("--attack", default=None, help="Poisoning attack to plant (training) or evaluate: badnets."),
        click.option("--target", default=0, show_default=True, type=int, help="Target label (all-to-one)."),
        click.option("--all-to-all", "all_to_all", is_flag=True, help="Map label i to i+1 mod K instead of one target."),
        click.option("--trigger-size", default=3, show_default=True, type=int, help="Side of the square patch (pixels)."),
        click.option("--trigger-position", default="bottom-right", show_default=True,
                     help="bottom-right, bottom-left, top-right, top-left, or ROW,COL of the patch's top-left pixel."),
        click.option("--trigger-value", default=1.0, show_default=True, type=float, help="Patch pixel value in [0, 1]."),
    ]
    for opt in reversed(options):
        f = opt(f)
    return f


def _make_attack(attack, target, all_to_all, trigger_size, trigger_position, trigger_value, poison_rate=0.1):
    from .attacks import make_poisoning_attack
    from .triggers import PatchTrigger, parse_position
    if attack is None:
        return None
    trigger = PatchTrigger(trigger_size, parse_position(trigger_position), trigger_value)
    return make_poisoning_attack(attack, target=target, mode="all-to-all" if all_to_all else "all-to-one",
                                 poison_rate=poison_rate, trigger=trigger)


data_dir_option = click.option("--data-dir", default=None, type=click.Path(file_okay=False),
                               help="Data directory (default: $BACKDOORLAB_DATA, else a per-user cache directory).")
progress_option = click.option("--no-progress", is_flag=True, help="Hide progress bars.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="backdoorlab")
def cli():
    """Plant, measure and remove backdoors in neural networks."""


@cli.command()
@click.option("--dataset", required=True, help="mnist, fashion-mnist, cifar10 or digits.")
@click.option("--arch", required=True, help="small-cnn, resnet20, preact-resnet18 or vgg16-bn.")
@_backdoor_options
@click.option("--poison-rate", default=0.1, show_default=True, type=float, help="Fraction of the training set poisoned.")
@click.option("--epochs", default=None, type=int, help="Training epochs (default: per data set and architecture).")
@click.option("--lr", default=None, type=float, help="Peak learning rate.")
@click.option("--batch-size", default=None, type=int)
@click.option("--schedule", default="onecycle", show_default=True, help="onecycle, cosine or constant.")
@click.option("--weight-decay", default=5e-4, show_default=True, type=float)
@click.option("--augment", default=None, help="none, crop or crop-flip (default: crop-flip for cifar10, else none).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as one JSON object.")
@data_dir_option
@progress_option
def train(dataset, arch, attack, target, all_to_all, trigger_size, trigger_position, trigger_value, poison_rate,
          epochs, lr, batch_size, schedule, weight_decay, augment, seed, out, as_json, data_dir, no_progress):
    """Train a model, optionally with a backdoor planted by data poisoning; writes OUT/model.safetensors + model.json."""
    from .models import list_models
    from .pipeline import train_defaults, train_run
    from .train import TrainConfig
    if arch not in list_models():
        raise BackdoorlabError(f"unknown architecture {arch!r}; valid: {valid_names(list_models())}")
    if attack is None and poison_rate != 0.1:
        raise BackdoorlabError("--poison-rate needs --attack")
    atk = _make_attack(attack, target, all_to_all, trigger_size, trigger_position, trigger_value, poison_rate)
    ds = _dataset(dataset, data_dir)
    if atk is not None:
        atk.backdoor.check(ds.num_classes)
        atk.backdoor.trigger.mask_and_pattern((ds.in_channels, *ds.image_size))
    d = train_defaults(ds.name, arch)
    for k, v in dict(epochs=epochs, lr=lr, batch_size=batch_size, augment=augment).items():
        if v is not None:
            d[k] = v
    d.setdefault("augment", "none")
    if d["epochs"] < 1:
        raise BackdoorlabError(f"--epochs must be >= 1, got {d['epochs']}")
    cfg = TrainConfig(schedule=schedule, weight_decay=weight_decay, seed=seed, **d)
    _, meta = train_run(ds, arch, cfg, atk, out=out, progress=not no_progress)
    m = meta["metrics"]
    if as_json:
        click.echo(json.dumps({k: m.get(k) for k in ("clean_accuracy", "attack_success_rate", "robust_accuracy")}
                              | {"out": out}))
    else:
        click.echo(f"trained {arch} on {ds.name} in {meta['training']['seconds']:.0f} s -> {out}")
        _print_metrics(m)


def _print_metrics(m: dict) -> None:
    click.echo(f"  clean accuracy (CA)       {_pct(m.get('clean_accuracy'))}")
    if m.get("attack_success_rate") is not None:
        click.echo(f"  attack success rate (ASR) {_pct(m.get('attack_success_rate'))}")
        click.echo(f"  robust accuracy (RA)      {_pct(m.get('robust_accuracy'))}")


@cli.command()
@click.argument("model_dir", type=click.Path())
@click.option("--dataset", default=None, help="Data set to evaluate on (default: the one in the model's sidecar).")
@_backdoor_options
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@data_dir_option
def evaluate(model_dir, dataset, attack, target, all_to_all, trigger_size, trigger_position, trigger_value, as_json,
             data_dir):
    """Measure CA, and ASR and RA for the attack given (or the one recorded in the model's sidecar)."""
    from .metrics import evaluate as evaluate_model
    from .models import load_checkpoint
    from .pipeline import backdoor_of, check_model_fits
    model, meta = load_checkpoint(model_dir, dataset=dataset)
    ds = _dataset(meta["dataset"], data_dir)
    check_model_fits(meta, ds, f"checkpoint {model_dir}")
    atk = _make_attack(attack, target, all_to_all, trigger_size, trigger_position, trigger_value)
    backdoor = atk.backdoor if atk is not None else backdoor_of(meta)
    if backdoor is not None:
        backdoor.check(ds.num_classes)
    m = evaluate_model(model, ds.test_x, ds.test_y, backdoor, ds.num_classes)
    out = {"clean_accuracy": m["clean_accuracy"], "attack_success_rate": m.get("attack_success_rate"),
           "robust_accuracy": m.get("robust_accuracy"), "n_test": m["n_test"],
           "backdoor": backdoor.to_dict() if backdoor else None}
    if as_json:
        click.echo(json.dumps(out))
    else:
        src = "given" if atk is not None else ("recorded in the sidecar" if backdoor else "none known")
        click.echo(f"{model_dir} on {ds.name} test set ({m['n_test']} images); backdoor: {src}")
        _print_metrics(m)


@cli.command()
@click.argument("model_dirs", nargs=-1, required=True, type=click.Path())
@click.option("--dataset", required=True, help="Data set the models were trained on (the budget comes from it).")
@click.option("--clean-budget", "budget", required=True, type=int, help="Number of clean images the defender has.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--curve", default="bezier", show_default=True, help="bezier or polychain.")
@click.option("--init", default="random", show_default=True, help="Control-point init: random or midpoint.")
@click.option("--steps", default=2400, show_default=True, type=int, help="Curve training steps.")
@click.option("--lr", default=0.05, show_default=True, type=float, help="Curve training peak learning rate.")
@click.option("--batch-size", default=128, show_default=True, type=int)
@click.option("--augment", default=None,
              help="none, crop, crop-flip or affine (default: crop-flip for cifar10, else affine).")
@click.option("--second-endpoint", default="scratch", show_default=True,
              help="With one model: how to make the second endpoint (scratch, distill or finetune).")
@click.option("--tolerance", default=0.04, show_default=True, type=float,
              help="Clean-accuracy tolerance of the t-selection rule (fraction).")
@click.option("--grid", default=11, show_default=True, type=int, help="Number of t values evaluated on [0, 1].")
@_backdoor_options
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--budget-seed", default=0, show_default=True, type=int, help="Which clean images form the budget.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object.")
@data_dir_option
@progress_option
def sanitize(model_dirs, dataset, budget, out, curve, init, steps, lr, batch_size, augment, second_endpoint,
             tolerance, grid, attack, target, all_to_all, trigger_size, trigger_position, trigger_value, seed,
             budget_seed, as_json, data_dir, no_progress):
    """Remove a backdoor from one or two suspect models with a learned curve in weight space.

    Writes OUT/model.safetensors + model.json (the sanitized model), OUT/path.json, OUT/path.png,
    OUT/curve.safetensors (the trained control point) and OUT/config.json. The trigger is never used to
    choose the model; --attack only adds the ASR column to the report.
    """
    from .augment import sanitizer_augmentation
    from .defenses import SanitizerConfig
    from .pipeline import sanitize_run
    if len(model_dirs) > 2:
        raise BackdoorlabError(f"sanitize takes one or two model directories, got {len(model_dirs)}")
    if steps < 1:
        raise BackdoorlabError(f"--steps must be >= 1, got {steps}")
    ds = _dataset(dataset, data_dir)
    if augment is None:
        augment = sanitizer_augmentation(ds.name)
    cfg = SanitizerConfig(curve=curve, init=init, steps=steps, second_steps=steps, lr=lr, batch_size=batch_size,
                          augment=augment, second_endpoint=second_endpoint, ca_tolerance=tolerance, grid=grid, seed=seed)
    atk = _make_attack(attack, target, all_to_all, trigger_size, trigger_position, trigger_value)
    summary = sanitize_run(ds, list(model_dirs), budget, out, cfg, backdoor=atk.backdoor if atk else None,
                           budget_seed=budget_seed, progress=not no_progress)
    if as_json:
        click.echo(json.dumps({k: summary[k] for k in ("t", "clean_accuracy", "attack_success_rate", "path")}
                              | {"out": out}))
        return
    click.echo(f"sanitized model at t = {summary['t']:.2f} -> {out}")
    _print_table(summary)


def _print_table(summary: dict) -> None:
    click.echo(f"  {'model':<28} {'CA':>8} {'ASR':>8}")
    for i, e in enumerate(summary["endpoints"]):
        name = f"suspect {i + 1}" if "made_by" not in e else f"second endpoint ({e['made_by']})"
        click.echo(f"  {name:<28} {_pct(e.get('clean_accuracy')):>8} {_pct(e.get('attack_success_rate')):>8}")
    click.echo(f"  {'sanitized (t = %.2f)' % summary['t']:<28} {_pct(summary['clean_accuracy']):>8} "
               f"{_pct(summary['attack_success_rate']):>8}")


@cli.command()
@click.option("--out", default="backdoorlab-demo", show_default=True, type=click.Path(file_okay=False))
@click.option("--seed", default=0, show_default=True, type=int)
@progress_option
def demo(out, seed, no_progress):
    """The whole story on the bundled 8x8 digits, in about a minute: plant, measure, sanitize."""
    from .demo import run_demo
    run_demo(out, seed=seed, progress=not no_progress, echo=click.echo)


@cli.command()
@click.argument("names", nargs=-1)
@data_dir_option
def download(names, data_dir):
    """Download data sets (default: mnist, fashion-mnist, cifar10) into the data directory and verify them."""
    from .data import list_datasets, load_dataset, resolve_data_dir
    names = names or ("mnist", "fashion-mnist", "cifar10")
    for n in names:
        if n not in list_datasets():
            raise BackdoorlabError(f"unknown dataset {n!r}; valid: {valid_names(list_datasets())}")
    for n in names:
        ds = load_dataset(n, data_dir, download=True)
        click.echo(f"{n}: {len(ds.train_y)} train / {len(ds.test_y)} test images in {resolve_data_dir(data_dir)}")


@cli.command(name="list")
def list_cmd():
    """List data sets, architectures and attacks."""
    from .attacks import POISONING_ATTACKS
    from .data import list_datasets
    from .models import list_models
    click.echo("datasets:      " + ", ".join(list_datasets()))
    click.echo("architectures: " + ", ".join(list_models()))
    click.echo("attacks:       " + ", ".join(POISONING_ATTACKS))


def main(argv=None) -> int:
    """Entry point: run the CLI, turning user errors into one line and a non-zero exit."""
    warnings.formatwarning = _warning_line
    try:
        cli.main(args=argv, prog_name="backdoorlab", standalone_mode=False)
    except BackdoorlabError as e:
        click.echo(f"error: {e}", err=True)
        return 2
    except click.exceptions.Abort:
        click.echo("interrupted", err=True)
        return 130
    except KeyboardInterrupt:
        click.echo("interrupted", err=True)
        return 130
    except click.ClickException as e:
        e.show()
        return e.exit_code
    except OSError as e:
        click.echo(f"error: {e}", err=True)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
