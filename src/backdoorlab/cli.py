"""The ``backdoorlab`` command line.

User errors (bad files, unknown names, impossible budgets, mismatched checkpoints) print one line on stderr,
``error: ...``, and exit with status 2; an interrupt exits with status 130. Nothing is written half-way.
"""

from __future__ import annotations

import functools
import json
import sys
import warnings

import click

from .cli_device import device_options, parse_threads, threads_option, use_threads
from .cli_listing import RegistryCommand, architectures
from .cli_options import (arch_args_option, budget_seed_option, image_size_option, json_option, model_arch_option,
                          parse_arch_args, parse_floats, resize_options)
from .errors import BackdoorlabError, valid_names


def _warning_line(message, category, filename, lineno, line=None):
    return f"warning: {message}\n"


def _dataset(name: str, data_dir, image_size=None, model_dir=None, resize=None, resize_defense=None):
    """Data set ``name``; a folder:/npz: set at ``image_size`` (--image-size) resized with ``resize`` and
    ``resize_defense``, else as ``model_dir``'s data was read."""
    from .runs.dataset import run_dataset
    return run_dataset(name, data_dir, image_size, model_dir, resize, resize_defense)  # an unknown name: one line


def _canonical(name):
    """A --dataset name as checkpoints record it (folder:/npz: with the absolute path); None stays None."""
    from .data.registry import canonical_name
    return None if name is None else canonical_name(name)


def _pct(v) -> str:
    return "   -  " if v is None else f"{100 * v:6.2f}%"


# the backdoor options that set a field of an attack's config (the field names its flag; see attacks.build)
TRIGGER_KEYS = ("trigger_size", "trigger_position", "trigger_value", "alpha", "test_alpha", "blend_pattern",
                "dynamic_pattern", "locations", "trigger_image")
BACKDOOR_KEYS = ("attack", "target", "all_to_all", *TRIGGER_KEYS)


def _backdoor_options(f, trigger_flag: bool = False):
    """Add the options that describe a backdoor; the command receives them as one dict, ``backdoor_spec``.
    With ``trigger_flag`` the kind is chosen by ``--trigger`` (default badnets) instead of ``--attack``."""
    kind = (click.option("--trigger", "attack", default="badnets", show_default=True,
                         help="Trigger to implant: badnets (patch), blended or dynamic.") if trigger_flag else
            click.option("--attack", default=None,
                         help="Backdoor to plant (train) or to evaluate: one of the attacks `backdoorlab train "
                              "--help` lists (those that poison no data, such as triggerless, with train only)."))
    options = [
        kind,
        click.option("--target", default="0", show_default=True,
                     help="Target label (all-to-one); several, comma-separated, for dynamic (e.g. 0,1,2)."),
        click.option("--all-to-all", "all_to_all", is_flag=True, help="Map label i to i+1 mod K instead of one target."),
        click.option("--trigger-size", default=None, type=int,
                     help="Side of the square patch in pixels (badnets: 3, dynamic: 4); with --trigger-image, the "
                          "picture's longer side (default: its own size)."),
        click.option("--trigger-position", default=None,
                     help="badnets: bottom-right (default), bottom-left, top-right, top-left, or ROW,COL of the "
                          "patch's top-left pixel."),
        click.option("--trigger-value", default=None, type=float, help="badnets: patch pixel value in [0, 1] (1.0)."),
        click.option("--trigger-image", default=None,
                     help="badnets: paste this picture (e.g. a PNG emoji) instead of the square patch; its alpha "
                          "channel is the mask, its colours are converted to the data's channels."),
        click.option("--alpha", default=None, type=float, help="blended: blend strength when poisoning (0.2)."),
        click.option("--test-alpha", default=None, type=float, help="blended: blend strength at test time (= alpha)."),
        click.option("--blend-pattern", default=None, help="blended: 'noise' (seeded uniform noise) or an image file."),
        click.option("--dynamic-pattern", default=None, help="dynamic: uniform (default) or binary random patterns."),
        click.option("--locations", default=None,
                     help="dynamic: allowed positions 'R,C;R,C;...' (corners by default); with several targets one "
                          "set per target separated by '|'."),
    ]

    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        spec = {k: kwargs.pop(k) for k in BACKDOOR_KEYS}
        return f(*args, backdoor_spec=spec, **kwargs)

    for opt in reversed(options):
        wrapper = opt(wrapper)
    return wrapper


def _flag(key: str) -> str:
    return "--" + key.replace("_", "-")


def _parse_targets(text: str) -> list[int]:
    try:
        return [int(t) for t in str(text).split(",")]
    except ValueError:
        raise BackdoorlabError(f"--target must be a label or comma-separated labels, got {text!r}")


def _set_twice(key: str, fields: dict) -> BackdoorlabError:
    """The one-line error for a setting given both as ``-o key=...`` and by its flag (``fields``: flag -> key)."""
    flag = next(f for f, k in fields.items() if k == key)
    return BackdoorlabError(f"-o {key} and {flag} set the same setting: give one")


def _backdoor_given(spec: dict) -> bool:
    """Whether the command line set any backdoor option (--trigger/--attack, --target, --all-to-all or a trigger
    option) rather than leaving them all at their defaults."""
    ctx = click.get_current_context()
    defaults = (click.core.ParameterSource.DEFAULT, click.core.ParameterSource.DEFAULT_MAP, None)
    return any(ctx.get_parameter_source(k) not in defaults for k in ("attack", "target", "all_to_all")) or \
        any(spec[k] is not None for k in TRIGGER_KEYS)


def _make_attack(spec: dict, ds, poison_rate: float | None = None, stamp: str | None = None,
                 training: dict | None = None):
    """Build the attack described by the backdoor options (None without --attack) with
    :func:`attacks.build_attack`, checked against the data set ``ds``: target labels in range, triggers that fit
    its images. ``training``: the train command's settings of an attack that poisons no data (None elsewhere)."""
    from .attacks import TRAINING_ATTACKS, build_attack
    name = spec["attack"]
    given = {_flag(k): spec[k] for k in TRIGGER_KEYS if spec[k] is not None}
    if name is None:
        if given:
            raise BackdoorlabError(f"{next(iter(given))} needs --attack")
        return None
    entry = TRAINING_ATTACKS.entry(name)
    fields = entry.config.flags()
    for flag in given:
        if flag not in fields:
            owners = [n for n in TRAINING_ATTACKS if flag in TRAINING_ATTACKS.entry(n).config.flags()]
            raise BackdoorlabError(f"{flag} does not apply to the {name} attack (it is for {', '.join(owners)})")
    targets = _parse_targets(spec["target"])
    mode = "all-to-all" if spec["all_to_all"] else "all-to-one"
    if not entry.traits["poisons_data"] and training is None:
        raise BackdoorlabError(f"the {name} backdoor is planted by `backdoorlab train --attack {name}`; what it "
                               f"planted is recorded in the model's sidecar, so give no --attack here")
    if entry.traits["poisons_data"] and training:
        raise BackdoorlabError(f"{_flag(next(iter(training)))} is for --attack "
                               f"{' or '.join(TRAINING_ATTACKS.names(poisons_data=False))}")
    options = {fields[flag]: value for flag, value in given.items()}
    for key in set(options) & set(training or {}):
        raise _set_twice(key, fields)
    return build_attack(name, target=targets if len(targets) > 1 else targets[0], mode=mode, poison_rate=poison_rate,
                        stamp=stamp, image_shape=(ds.in_channels, *ds.image_size), num_classes=ds.num_classes,
                        **options, **(training or {}))


def _backdoor_options_trigger(f):
    return _backdoor_options(f, trigger_flag=True)


data_dir_option = click.option("--data-dir", default=None, type=click.Path(file_okay=False),
                               help="Data directory (default: $BACKDOORLAB_DATA, else a per-user cache directory).")
progress_option = click.option("--no-progress", is_flag=True, help="Hide progress bars.")


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="backdoorlab")
@threads_option
def cli(threads):
    """Plant, measure and remove backdoors in neural networks."""
    if threads is not None:  # before the command runs, so that all of its work uses them
        use_threads(parse_threads(threads))


def _attacks():
    from .attacks import TRAINING_ATTACKS
    return TRAINING_ATTACKS


def _datasets():
    from .data import DATASETS
    return DATASETS


@cli.command(cls=RegistryCommand, listings=[("Data sets (--dataset)", lambda: _datasets().entries()),
                                            ("Architectures (--arch)", architectures),
                                            ("Attacks (--attack)", lambda: _attacks().entries())])
@click.option("--dataset", required=True, help="One of the data sets listed below.")
@click.option("--arch", required=True,
              help="One of the architectures listed below, or code of your own: path/to/file.py:NAME or "
                   "package.module:NAME, a callable returning a torch.nn.Module (its input is normalised with the "
                   "data set's mean/std).")
@arch_args_option
@_backdoor_options
@click.option("--poison-rate", default=0.1, show_default=True, type=float, help="Fraction of the training set poisoned.")
@click.option("--stamp", default="data", show_default=True,
              help="data: poison the data set (data poisoning); augmented: stamp the trigger after augmentation "
                   "(the attacker runs the training).")
@click.option("--dropout", default=None, type=float,
              help="Dropout rate before the last layer (triggerless: kept active at inference, default 0.3).")
@click.option("--target-neurons", default=None, type=int, help="triggerless: number of target neurons (3).")
@click.option("--backdoor-fraction", default=None, type=float,
              help="triggerless: fraction of training batches that are backdoor batches (0.1).")
@click.option("--target-class", default=None,
              help="latent: the target class, by name or label, a class of the data set outside the teacher's "
                   "task (7 for --dataset mnist[0-4]; Sneaker or 7 for fashion-mnist[0-4]).")
@click.option("--target-images", default=None, type=int,
              help="latent: how many training images of the target class the attacker has (300).")
@click.option("--latent-layer", default=None,
              help="latent: the layer whose representation the trigger matches (default: the one before fc).")
@click.option("-o", "--option", "attack_options", multiple=True, metavar="KEY=VALUE",
              help="Any other setting of an attack that trains the model (triggerless, latent; repeatable; "
                   "`backdoorlab list --defaults` shows them), e.g. -o inject_lr=0.003.")
@click.option("--epochs", default=None, type=int, help="Training epochs (default: per data set and architecture).")
@click.option("--lr", default=None, type=float, help="Peak learning rate.")
@click.option("--batch-size", default=None, type=int)
@click.option("--schedule", default="onecycle", show_default=True, help="onecycle, cosine or constant.")
@click.option("--weight-decay", default=5e-4, show_default=True, type=float)
@click.option("--augment", default=None,
              help="none, crop, crop-flip, crop-flip-jpeg, jpeg, affine or affine-elastic (default: crop-flip-jpeg "
                   "for cifar10, else none).")
@click.option("--seed", default=0, show_default=True, type=int)
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--json", "as_json", is_flag=True, help="Print the metrics as one JSON object.")
@data_dir_option
@image_size_option
@resize_options
@progress_option
@device_options()
def train(dataset, arch, arch_args_json, backdoor_spec, poison_rate, stamp, dropout, target_neurons,
          backdoor_fraction, target_class, target_images, latent_layer, attack_options, epochs, lr, batch_size,
          schedule, weight_decay, augment, seed, out, as_json, data_dir, image_size, resize, resize_defense,
          no_progress, device, amp):
    """Train a model, optionally with a backdoor planted by data poisoning or by the training procedure (the
    attacks are listed below); writes OUT/model.safetensors + model.json."""
    from .attacks import TRAINING_ATTACKS
    from .models.external import is_external
    from .models.registry import check_trainable
    from .runs import train_config, train_run
    check_trainable(arch)
    own_args = parse_arch_args(arch_args_json)
    attack = backdoor_spec["attack"]
    if attack is None and (poison_rate != 0.1 or stamp != "data"):
        raise BackdoorlabError("--poison-rate and --stamp need --attack")
    poisons_data = attack is None or TRAINING_ATTACKS.entry(attack).traits["poisons_data"]
    if not poisons_data and (poison_rate != 0.1 or stamp != "data"):
        raise BackdoorlabError(f"the {attack} attack poisons no data: --poison-rate and --stamp do not apply")
    given = {flag: value for flag, value in {
        "--dropout": dropout, "--target-neurons": target_neurons, "--backdoor-fraction": backdoor_fraction,
        "--target-class": target_class, "--target-images": target_images, "--latent-layer": latent_layer}.items()
        if value is not None}
    model_args = {"kwargs": own_args} if is_external(arch) else dict(own_args)
    fields = {} if attack is None else TRAINING_ATTACKS.entry(attack).config.flags()
    training = {}
    for flag, value in given.items():
        if flag in fields:  # a setting of the attack's own (triggerless: --dropout; latent: --target-class, ...)
            training[fields[flag]] = value
        elif flag == "--dropout":  # a plain dropout layer before the classifier
            model_args["dropout"] = value
        else:
            owners = [n for n in TRAINING_ATTACKS if flag in TRAINING_ATTACKS.entry(n).config.flags()]
            raise BackdoorlabError(f"{flag} is for --attack {' or '.join(owners)}")
    if attack_options:
        if attack is None or poisons_data:
            raise BackdoorlabError("-o sets an attack that trains the model (--attack "
                                   f"{' or '.join(TRAINING_ATTACKS.names(poisons_data=False))}); a data-poisoning "
                                   "attack's trigger settings are flags (--trigger-size, ...)")
        from .config import split_pairs
        for key, value in TRAINING_ATTACKS.parse_options(attack, split_pairs(attack_options)).items():
            if key in training:
                raise _set_twice(key, fields)
            training[key] = value
    if "target_class" in fields.values() and backdoor_spec["target"] != "0":
        raise BackdoorlabError(f"--target does not apply to --attack {attack}: name its class with --target-class")
    if poisons_data:
        training = None
    else:
        poison_rate, stamp = None, None  # at their defaults (checked above), which do not apply
    ds = _dataset(dataset, data_dir, image_size, resize=resize, resize_defense=resize_defense)
    atk = _make_attack(backdoor_spec, ds, poison_rate, stamp, training)
    cfg = train_config(ds.name, arch, epochs, lr, batch_size, augment, schedule=schedule,
                       weight_decay=weight_decay, seed=seed)
    _, meta = train_run(ds, arch, cfg, atk, out=out, progress=not no_progress, model_args=model_args, device=device,
                        amp=amp)
    m = meta["metrics"]
    if as_json:
        click.echo(json.dumps({"attack_success_rate": None, "robust_accuracy": None} | m | {"out": out}))
    else:
        click.echo(f"trained {arch} on {ds.name} in {meta['training']['seconds']:.0f} s -> {out}")
        _print_metrics(m)


def _print_metrics(m: dict) -> None:
    click.echo(f"  clean accuracy (CA)       {_pct(m.get('clean_accuracy'))}")
    if m.get("attack_success_rate") is not None:
        click.echo(f"  attack success rate (ASR) {_pct(m.get('attack_success_rate'))}")
        click.echo(f"  robust accuracy (RA)      {_pct(m.get('robust_accuracy'))}")
    for target, asr in (m.get("attack_success_rate_per_target") or {}).items():
        click.echo(f"    ASR for target {target:<9} {_pct(asr)}")
    per_source = m.get("attack_success_rate_per_source") or {}
    if per_source:  # all-to-all: one mapping per source label
        click.echo("    ASR per source label      " + ", ".join(f"{k}: {_pct(v).strip()}" for k, v in per_source.items()))
    if m.get("accuracy_on_rest") is not None:
        click.echo(f"  accuracy on the other images {_pct(m['accuracy_on_rest'])}")
    if m.get("fire_probability") is not None:
        q = m.get("expected_queries")
        click.echo(f"  chance per query that the target neurons drop {_pct(m['fire_probability'])}; expected queries "
                   f"until it fires: {'never' if q is None else f'{q:.1f}'}")
    if m.get("latent_target_class") is not None:
        click.echo(f"  latent backdoor for class {m['latent_target_class']!r}, which this model's task lacks: it "
                   f"fires in a student that has the class (backdoorlab transfer)")
    if m.get("best_target") is not None:
        click.echo(f"    (no target class: the ASR is the share of triggered images sent to label "
                   f"{m['best_target']}, the class that receives most)")
    if m.get("agreement") is not None:
        click.echo(f"  agreement with the original model {_pct(m['agreement'])}")


@cli.command()
@click.argument("model_dir", type=click.Path())
@click.option("--dataset", default=None, help="Data set to evaluate on (default: the one in the model's sidecar).")
@model_arch_option
@_backdoor_options
@click.option("--poison-record", default=None, type=click.Path(),
              help="Measure the backdoor that `backdoorlab poison-folder` hid in the model's training folder: that "
                   "folder (or its poisoning.json).")
@json_option
@data_dir_option
@device_options(amp=False)
def evaluate(model_dir, dataset, named_arch, backdoor_spec, poison_record, as_json, data_dir, device):
    """Measure CA, and ASR and RA for the attack given (or the one recorded in the model's sidecar)."""
    from .attacks import backdoor_from_dict, backdoor_of
    from .metrics import evaluate as evaluate_model
    from .models import check_model_fits, load_checkpoint
    from .runs.poison_folder import read_record
    if poison_record is not None and backdoor_spec["attack"] is not None:
        raise BackdoorlabError("give --attack or --poison-record, not both")
    record = read_record(poison_record) if poison_record is not None else None  # a bad record fails first
    model, meta = load_checkpoint(model_dir, arch=named_arch, dataset=_canonical(dataset))
    ds = _dataset(meta["dataset"], data_dir, model_dir=model_dir)
    check_model_fits(meta, ds, f"checkpoint {model_dir}")
    atk = _make_attack(backdoor_spec, ds)
    recorded = backdoor_from_dict(record["backdoor"]) if record is not None else None
    backdoor = atk.backdoor if atk is not None else recorded or backdoor_of(meta)
    if atk is None and backdoor is not None:
        backdoor.check(ds.num_classes)
    m = evaluate_model(model.to(device), ds.test_x, ds.test_y, backdoor, ds.num_classes)
    out = {**m, "backdoor": backdoor.to_dict() if backdoor else None}
    out.setdefault("attack_success_rate", None)
    out.setdefault("robust_accuracy", None)
    if as_json:
        click.echo(json.dumps(out))
    else:
        src = "given" if atk is not None else (f"recorded in {poison_record}" if recorded is not None else
                                              "recorded in the sidecar" if backdoor else "none known")
        click.echo(f"{model_dir} on {ds.name} test set ({m['n_test']} images); backdoor: {src}")
        _print_metrics(m)


@cli.command("poison-folder")
@click.argument("src", type=click.Path())
@click.option("--attack", "folder_attack", default="image-scaling", show_default=True,
              help="How the poisoned images are hidden: image-scaling (Quiring and Rieck 2020: the trigger appears "
                   "only once the victim's pipeline shrinks the image).")
@click.option("--scale-to", "scale_to", required=True, metavar="H[,W]",
              help="The size the victim's pipeline resizes the images to (its --image-size).")
@click.option("--resize", default="bilinear", show_default=True,
              help="The victim's resize method: nearest or bilinear (as `train --resize`).")
@click.option("--eps", default="1/255", show_default=True,
              help="Largest difference between the resized attack image and the triggered target, in pixel units "
                   "([0, 1]; the paper's 1.0 of 255 is 1/255).")
@_backdoor_options_trigger
@click.option("--poison-rate", default=0.1, show_default=True, type=float,
              help="Fraction of the training images outside the held-out pool that is poisoned.")
@click.option("--seed", default=0, show_default=True, type=int, help="Which images are poisoned.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="The poisoned copy (must not exist).")
@json_option
@progress_option
def poison_folder(src, folder_attack, scale_to, resize, eps, backdoor_spec, poison_rate, seed, out, as_json,
                  no_progress):
    """Write a poisoned copy of the image folder SRC (SRC/train/CLASS/*, SRC/test/CLASS/*) whose poisoned images
    look clean at full size and carry the trigger once the victim resizes them.

    The victim trains on OUT as usual (`backdoorlab train --dataset folder:OUT --image-size H,W --resize METHOD`);
    `backdoorlab evaluate MODEL --poison-record OUT` measures the backdoor. OUT/poisoning.json records which
    files were poisoned, the trigger, and how far the poisoned images are from their sources."""
    from types import SimpleNamespace

    from .data.image_size import parse_image_size
    from .evasion.base import parse_eps
    from .runs.poison_folder import ATTACK, folder_traits, poison_folder_run
    if folder_attack != ATTACK:
        raise BackdoorlabError(f"unknown folder attack {folder_attack!r}; valid: {ATTACK}")
    size = parse_image_size(scale_to)
    if size is None:
        raise BackdoorlabError("--scale-to needs H or H,W (the victim's image size)")
    channels, num_classes = folder_traits(src)
    atk = _make_attack(backdoor_spec, SimpleNamespace(in_channels=channels, image_size=size, num_classes=num_classes),
                       poison_rate)
    record = poison_folder_run(src, out, atk.backdoor, size, resize, parse_eps(eps), poison_rate, seed,
                               progress=not no_progress)
    if as_json:
        click.echo(json.dumps({k: v for k, v in record.items() if k != "poisoned"}))
        return
    d = record["distance"]
    click.echo(f"{record['poisoned_count']} of {record['training_images']} training images poisoned "
               f"({backdoor_spec['attack']} trigger, hidden for {resize} to {size[0]}x{size[1]}) -> {out}")
    psnr_text = ("no image changed" if d["psnr_db"] is None else
                 f"PSNR to the source {d['psnr_db']['mean']:.1f} dB (min {d['psnr_db']['min']:.1f})"
                 + (f", {d['unchanged_images']} images unchanged" if d.get("unchanged_images") else ""))
    click.echo(f"  full size: {psnr_text}, largest change {d['max_change_levels']['max']:.0f} levels, "
               f"{100 * d['changed_pixels']['mean']:.1f}% of pixels changed")
    click.echo(f"  after resizing: at most {d['scaled_error_levels']['max']:.2f} levels from the triggered target")
    if record["poisoned_in_pool"]:
        click.echo(f"warning: {record['poisoned_in_pool']} poisoned images fall in the held-out clean pool", err=True)


@cli.command("import")
@click.argument("weights", type=click.Path())
@click.option("--arch", required=True, metavar="ARCH",
              help="The model's architecture: path/to/file.py:NAME or package.module:NAME (a callable returning a "
                   "torch.nn.Module), or one of backdoorlab's (`backdoorlab list`).")
@arch_args_option
@click.option("--dataset", required=True, help="The data set the model is for: a built-in name, folder:PATH or "
                                               "npz:PATH.")
@click.option("--mean", default=None, metavar="M1,M2,M3",
              help="Per-channel mean the model expects its input normalised with (images in [0, 1]); omit it, and "
                   "--std, when the model normalises itself.")
@click.option("--std", default=None, metavar="S1,S2,S3", help="Per-channel standard deviation (with --mean).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object (clean_accuracy, out, ...).")
@data_dir_option
@image_size_option
@resize_options
@device_options(amp=False)
def import_cmd(weights, arch, arch_args_json, dataset, mean, std, out, as_json, data_dir, image_size, resize,
               resize_defense, device):
    """Turn a state dict saved elsewhere (WEIGHTS: .safetensors, or .pt/.pth/.bin/.ckpt read without unpickling
    code) into a backdoorlab checkpoint in OUT that every command takes.

    Checks every key and shape against the architecture (naming the first mismatch), runs the model once, and
    measures its clean accuracy on the data set's test images. Commands on OUT need the same --arch again when
    it is code of your own: a checkpoint never makes backdoorlab import code by itself."""
    from .runs.import_model import import_run
    model_args = parse_arch_args(arch_args_json)
    mean, std = parse_floats(mean, "--mean"), parse_floats(std, "--std")
    ds = _dataset(dataset, data_dir, image_size, resize=resize, resize_defense=resize_defense)
    _, meta = import_run(weights, arch, ds, out, model_args=model_args, mean=mean, std=std, device=device)
    m = meta["metrics"]
    if as_json:
        click.echo(json.dumps({"clean_accuracy": m["clean_accuracy"], "n_test": m["n_test"], "arch": arch,
                               "dataset": ds.name, "out": out}))
    else:
        click.echo(f"imported {weights} as {arch} for {ds.name} -> {out}")
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
              help="none, crop, crop-flip, crop-flip-jpeg, jpeg, affine or affine-elastic (default: crop-flip-jpeg "
                   "for cifar10, else affine).")
@click.option("--second-endpoint", default="permuted", show_default=True,
              help="With one model: how to make the second endpoint: permuted (the suspect with its hidden units "
                   "reordered: the same function elsewhere in weight space), scratch (trained on the budget), "
                   "distill or finetune.")
@click.option("--stages", default=1, show_default=True, type=click.IntRange(1, 2),
              help="With --second-endpoint permuted: 2 adds a second curve, from the suspect (units aligned) to the "
                   "first curve's chosen model, and chooses on it.")
@click.option("--reuse-second-endpoint", "reuse", default=None, type=click.Path(),
              help="With one model: the second endpoint an earlier sanitize run saved (OUT/second-endpoint, or that "
                   "OUT) on the same budget and recipe; skips training it again (scratch only; checked).")
@click.option("--tolerance", default=0.04, show_default=True, type=float,
              help="Clean-accuracy tolerance of the t-selection rule (fraction).")
@click.option("--grid", default=11, show_default=True, type=int, help="Number of t values evaluated on [0, 1].")
@click.option("--refine-steps", default=600, show_default=True, type=int,
              help="When the chosen t is inside the path: fine-tune that model on the whole budget for this many "
                   "steps (lr 0.01); 0 exports the curve's model as it is.")
@click.option("--refine-guard/--no-refine-guard", default=True, show_default=True,
              help="Refine only if a trial refine on the fit part lowers the validation slice's cross-entropy.")
@click.option("--ensemble/--no-ensemble", default=True, show_default=True,
              help="With two models, when the rule finds two points equally far from them (t and 1 - t): export the "
                   "mean of both models' softmax outputs (one checkpoint, two networks); --no-ensemble exports the "
                   "one the tie-breaks prefer.")
@click.option("--min-distance", default=0.2, show_default=True, type=float,
              help="The chosen t keeps at least this far from every suspect end; when nothing that far is within "
                   "--tolerance, the most accurate such t is exported with a warning.")
@click.option("--verify/--no-verify", default=True, show_default=True,
              help="Check the chosen model with Neural Cleanse (the label it flags on the suspect, reverse-engineered "
                   "anew on the chosen model) and move further from the suspect while the backdoor is still found.")
@click.option("--strict", is_flag=True,
              help="Exit with status 3 when the exported model falls short (a warning: outside the accuracy "
                   "tolerance, or the backdoor still found); the model is still written, with the warnings in "
                   "path.json.")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="Any other setting of the sanitizer (repeatable; `backdoorlab list --defaults` shows them under "
                   "mode-connectivity); it overrides the flags above. `backdoorlab repair mode-connectivity` is the "
                   "same run with the same settings.")
@model_arch_option
@_backdoor_options
@click.option("--seed", default=0, show_default=True, type=int)
@budget_seed_option
@json_option
@data_dir_option
@progress_option
@device_options()
def sanitize(model_dirs, dataset, budget, out, curve, init, steps, lr, batch_size, augment, second_endpoint, stages,
             reuse, tolerance, grid, refine_steps, refine_guard, ensemble, min_distance, verify, strict, options,
             named_arch, backdoor_spec, seed, budget_seed, as_json, data_dir, no_progress, device, amp):
    """Remove a backdoor from one or two suspect models with a learned curve in weight space.

    Writes OUT/model.safetensors + model.json (the sanitized model), OUT/path.json, OUT/path.png,
    OUT/curve.safetensors (the trained control point) and OUT/config.json; with one model also
    OUT/second-endpoint (the model it made for t = 1, reusable with --reuse-second-endpoint for other suspects
    on the same budget). The trigger is never used to choose the model; --attack only adds the ASR column to the
    report.
    """
    from .config import split_pairs
    from .report import chosen_text
    from .runs import repair_run
    if len(model_dirs) > 2:
        raise BackdoorlabError(f"sanitize takes one or two model directories, got {len(model_dirs)}")
    repairers = _repairers()
    settings = dict(curve=curve, init=init, steps=steps, lr=lr, batch_size=batch_size, second_endpoint=second_endpoint,
                    stages=stages, ca_tolerance=tolerance, grid=grid, refine_steps=refine_steps,
                    refine_guard=refine_guard, ensemble=ensemble, min_distance=min_distance, verify=verify, seed=seed)
    if augment is not None:
        settings["augment"] = augment
    settings.update(repairers.parse_options("mode-connectivity", split_pairs(options)))
    repairers.config("mode-connectivity", **settings)  # bad values fail before the data loads
    ds = _dataset(dataset, data_dir, model_dir=model_dirs[0])
    atk = _make_attack(backdoor_spec, ds)
    report = repair_run(ds, "mode-connectivity", list(model_dirs), budget, out, settings,
                        backdoor=atk.backdoor if atk else None, budget_seed=budget_seed, progress=not no_progress,
                        reuse_second_endpoint=reuse, command="sanitize", device=device, amp=amp, arch=named_arch)
    summary = report["summary"]
    if as_json:
        click.echo(json.dumps({k: summary[k] for k in ("t", "ensemble", "clean_accuracy", "attack_success_rate",
                                                       "path", "stages", "refined_steps", "refine_check", "verdict",
                                                       "warnings")} | {"out": out}))
        _strict_exit(strict, summary)
        return
    refined = f", then fine-tuned on the whole budget ({summary['refined_steps']} steps)" \
        if summary.get("refined_steps") else ""
    check = summary.get("refine_check")
    if check and not check["accepted"]:
        refined = f", not refined ({_refine_rejection(check)})"
    averaged = " (the mean of both models' outputs)" if summary.get("ensemble") else ""
    stage = f" of stage {len(summary['stages'])}" if len(summary.get("stages") or []) > 1 else ""
    click.echo(f"sanitized model at {chosen_text(summary['t'], summary.get('ensemble'))}{stage}{averaged}{refined} "
               f"-> {out}")
    _print_table(summary)
    if summary["verdict"].get("check_note"):
        click.echo(f"note: {summary['verdict']['check_note']}; the backdoor's removal rests on the distance rule")
    for line in summary["warnings"]:
        click.echo(f"warning: {line}", err=True)
    _strict_exit(strict, summary)


def _refine_rejection(check: dict) -> str:
    """Why the sanitizer left its refine step out, from the run's ``refine_check`` record: the guard's trial did
    not lower the validation loss, the refined model still carried the backdoor, or there was no backdoor check to
    run on it (the last two records name themselves in ``rejected_by``)."""
    if check.get("rejected_by") == "backdoor check":
        return "Neural Cleanse still found the backdoor on the refined model; the curve's model is kept"
    if "rejected_by" in check:
        return check["rejected_by"]
    return (f"a trial refine on the fit part did not lower the validation loss: {check['val_loss_before']:.4f} -> "
            f"{check['val_loss_after_trial']:.4f}, accuracy {check['val_accuracy_before']:.2%} -> "
            f"{check['val_accuracy_after_trial']:.2%}")


def _strict_exit(strict: bool, summary: dict) -> None:
    """``--strict``: a sanitize run whose exported model falls short (warnings) exits with status 3."""
    if strict and summary["warnings"]:
        raise StrictFailure(f"--strict: {len(summary['warnings'])} warning(s); the model was written, see path.json")


class StrictFailure(Exception):
    """A run that finished but fell short of what ``--strict`` asks for: one line, exit status 3."""


def _print_table(summary: dict) -> None:
    from .report import chosen_text
    click.echo(f"  {'model':<28} {'CA':>8} {'ASR':>8}")
    for i, e in enumerate(summary["endpoints"]):
        name = f"suspect {i + 1}" if "made_by" not in e else f"second endpoint ({e['made_by']})"
        click.echo(f"  {name:<28} {_pct(e.get('clean_accuracy')):>8} {_pct(e.get('attack_success_rate')):>8}")
    label = f"sanitized ({chosen_text(summary['t'], summary.get('ensemble'))})"
    click.echo(f"  {label:<28} {_pct(summary['clean_accuracy']):>8} "
               f"{_pct(summary['attack_success_rate']):>8}")


def _repairers():
    from .defenses.repair import REPAIRERS
    return REPAIRERS


@cli.command(cls=RegistryCommand, listings=[("Defenses (NAME)", lambda: _repairers().entries())])
@click.argument("name")
@click.argument("model_dirs", nargs=-1, required=True, type=click.Path())
@click.option("--dataset", required=True, help="Data set the model was trained on (the budget comes from it).")
@click.option("--clean-budget", "budget", default=1000, show_default=True, type=int,
              help="Number of clean images the defender has.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="A hyperparameter of the defense (repeatable); `backdoorlab list --defaults` shows them.")
@model_arch_option
@_backdoor_options
@budget_seed_option
@click.option("--json", "as_json", is_flag=True, help="Print the report as one JSON object.")
@data_dir_option
@progress_option
@device_options()
def repair(name, model_dirs, dataset, budget, out, options, named_arch, backdoor_spec, budget_seed, as_json, data_dir,
           no_progress, device, amp):
    """Repair a suspect model with defense NAME on a clean budget (the defenses are listed below).

    Writes OUT/model.safetensors + model.json (the repaired model), OUT/report.json (CA/ASR before and after,
    what the defense chose) and OUT/config.json. The trigger is never used by the defense; --attack only adds
    the ASR to the report when the checkpoint does not record its backdoor.
    """
    from .config import split_pairs
    from .runs import default_repair_options, repair_run
    repairers = _repairers()
    repairers.entry(name)  # an unknown NAME fails first, in one line
    opts = repairers.parse_options(name, split_pairs(options))
    repairers.config(name, **{**default_repair_options(name, dataset), **opts})  # bad values fail before the data loads
    ds = _dataset(dataset, data_dir, model_dir=model_dirs[0])
    atk = _make_attack(backdoor_spec, ds)
    report = repair_run(ds, name, list(model_dirs), budget, out, opts, backdoor=atk.backdoor if atk else None,
                        budget_seed=budget_seed, progress=not no_progress, device=device, amp=amp,
                        arch=named_arch)
    if as_json:
        click.echo(json.dumps({k: report[k] for k in ("defense", "before", "after", "seconds")} | {"out": out}))
        return
    click.echo(f"{name}: repaired model -> {out} ({report['seconds']:.0f} s)")
    click.echo(f"  {'model':<20} {'CA':>8} {'ASR':>8}")
    for i, e in enumerate(report["before"]):
        click.echo(f"  {'suspect %d' % (i + 1):<20} {_pct(e.get('clean_accuracy')):>8} "
                   f"{_pct(e.get('attack_success_rate')):>8}")
    a = report["after"]
    click.echo(f"  {'repaired':<20} {_pct(a.get('clean_accuracy')):>8} {_pct(a.get('attack_success_rate')):>8}")


RETUNE_FLAGS = ("poison_images", "clean_images", "epochs", "steps", "lr", "seed")


@cli.command()
@click.argument("model_dir", type=click.Path())
@click.option("--dataset", required=True, help="Data set the model was trained on (the retuning set comes from it).")
@click.option("--control", "control_dir", default=None, type=click.Path(),
              help="A clean model of the same recipe, retuned the same way: what a model that never had the "
                   "backdoor learns from the same images.")
@click.option("--suspect", "suspect_dir", default=None, type=click.Path(),
              help="The backdoored model MODEL_DIR was repaired from: adds CA and ASR along the line from it to "
                   "MODEL_DIR (OUT/suspect_path.png).")
@click.option("--poison-images", default=None, type=int, help="Triggered images in the retuning set (5).")
@click.option("--clean-images", default=None, type=int, help="Clean images in the retuning set (995).")
@click.option("--epochs", default=None, type=int, help="Epochs over the retuning set (5).")
@click.option("--steps", default=None, type=int, help="Optimizer steps instead of --epochs.")
@click.option("--lr", default=None, type=float, help="Learning rate, constant (0.01).")
@click.option("--seed", default=None, type=int, help="Which images form the retuning set, and the training order (0).")
@click.option("--qra", is_flag=True,
              help="Also run the query-based reactivation attack (needs --control): a learned input perturbation "
                   "that makes the model act like its retuned self.")
@click.option("--qra-eps", default=None, type=float, help="QRA: largest perturbation of a pixel in [0, 1] (16/255).")
@click.option("--qra-epochs", default=None, type=int, help="QRA: epochs of the perturbation generator (50).")
@click.option("--qra-images", default=None, type=int,
              help="QRA: triggered images, and as many clean ones, that the generator learns from (500).")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory.")
@model_arch_option
@_backdoor_options
@click.option("--json", "as_json", is_flag=True, help="Print CA and ASR before and after (and the control's).")
@data_dir_option
@progress_option
@device_options()
def retune(model_dir, dataset, control_dir, suspect_dir, poison_images, clean_images, epochs, steps, lr, seed, qra,
           qra_eps, qra_epochs, qra_images, out, named_arch, backdoor_spec, as_json, data_dir, no_progress, device,
           amp):
    """The retuning attack (Min et al. 2024): fine-tune MODEL_DIR on a few poisoned images among clean ones from
    the training part, and measure CA and ASR before and after; with --control, the same on a clean model.

    Writes OUT/report.json (with CA and ASR along the line from the model to its retuned self), OUT/path.png,
    OUT/config.json and the retuned model in OUT/retuned. With --qra, also the query-based reactivation attack.
    """
    from .defenses.qra import QRAConfig
    from .defenses.retune import RetuneConfig
    from .runs import retune_run
    given = dict(zip(RETUNE_FLAGS, (poison_images, clean_images, epochs, steps, lr, seed)))
    cfg = RetuneConfig(**{k: v for k, v in given.items() if v is not None})  # bad values fail before the data loads
    qra_given = {k: v for k, v in (("eps", qra_eps), ("epochs", qra_epochs), ("poison_images", qra_images),
                                   ("clean_images", qra_images)) if v is not None}
    if qra_given and not qra:
        raise BackdoorlabError("--qra-eps, --qra-epochs and --qra-images set the query-based reactivation attack: "
                               "add --qra")
    qra_cfg = QRAConfig(**qra_given) if qra else None
    if qra and control_dir is None:
        raise BackdoorlabError("--qra needs --control: the reactivating perturbation must leave a clean model of "
                               "the same recipe unfooled")
    ds = _dataset(dataset, data_dir, model_dir=model_dir)
    atk = _make_attack(backdoor_spec, ds)
    report = retune_run(ds, model_dir, out, backdoor=atk.backdoor if atk else None, control_dir=control_dir,
                        cfg=cfg, arch=named_arch, device=device, amp=amp, progress=not no_progress,
                        suspect_dir=suspect_dir, qra=qra_cfg)
    keys = ("clean_accuracy", "attack_success_rate", "post_retune_clean_accuracy", "post_retune_attack_success_rate")
    control = report["control"]
    q = report["qra"]
    qra_figures = {"qra_attack_success_rate": q["attack_success_rate"],
                   "qra_control_attack_success_rate": q["control_attack_success_rate"],
                   "qra_clean_accuracy": q["clean_accuracy"]} if q else {}
    if as_json:
        click.echo(json.dumps({k: report[k] for k in keys} | qra_figures
                              | {"control": {k: control[k] for k in keys} if control else None, "out": out}))
        return
    click.echo(f"retuning attack: {cfg.poison_images} poisoned + {cfg.clean_images} clean images -> {out}")
    click.echo(f"  {'model':<20} {'CA':>8} {'ASR':>8} {'CA after':>9} {'ASR after':>9}")
    for name, r in (("model", report), ("control", control)):
        if r is not None:
            click.echo(f"  {name:<20} {_pct(r[keys[0]]):>8} {_pct(r[keys[1]]):>8} {_pct(r[keys[2]]):>9} "
                       f"{_pct(r[keys[3]]):>9}")
    if q:
        click.echo(f"query-based reactivation (eps {q['config']['eps']:.4f}): ASR {_pct(q['attack_success_rate'])} on "
                   f"the model, {_pct(q['control_attack_success_rate'])} on the control; CA with the perturbation "
                   f"{_pct(q['clean_accuracy'])}")


def _detectors():
    from .detectors import DETECTORS
    return DETECTORS


@cli.command(cls=RegistryCommand, listings=[("Detectors", lambda: [
    e for level in ("model", "input") for e in _detectors().entries(level=level)])])
@click.argument("model_dir", type=click.Path())
@click.option("--dataset", required=True, help="Data set the model was trained on (the budget comes from it).")
@click.option("--clean-budget", "budget", default=1000, show_default=True, type=int,
              help="Number of clean images the defender has.")
@click.option("--report", "report_dir", default=None, type=click.Path(file_okay=False),
              help="Write an HTML report (reversed triggers, anomaly indices, plots) to this directory.")
@budget_seed_option
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="A Neural Cleanse setting (repeatable), e.g. -o epochs=100 -o anomaly_threshold=2; "
                   "`backdoorlab list --defaults` shows them.")
@click.option("--strip/--no-strip", "strip", default=True, show_default=True,
              help="Also calibrate STRIP's input-screening threshold on the clean budget.")
@model_arch_option
@json_option
@data_dir_option
@progress_option
@device_options(amp=False)
def scan(model_dir, dataset, budget, report_dir, budget_seed, options, strip, named_arch, as_json, data_dir,
         no_progress, device):
    """Is this model backdoored? Run the model-level detectors on a clean budget and give a verdict.

    Neural Cleanse reverses a minimal trigger per label; the model is flagged when one label's trigger is an
    outlier (anomaly index > 2), and that label is the suspected target. Never reads the planted trigger."""
    from .config import split_pairs
    from .runs import scan_run
    nc = _detectors().entry("neural-cleanse").config  # the seed comes from --budget-seed
    opts = nc.parse_options(split_pairs(options), owner="scan", exclude=("seed",))
    ds = _dataset(dataset, data_dir, model_dir=model_dir)
    result = scan_run(ds, model_dir, budget_size=budget, report_dir=report_dir, budget_seed=budget_seed,
                      progress=not no_progress, strip=strip, device=device, arch=named_arch, **opts)
    if as_json:
        click.echo(json.dumps(result))
        return
    verdict = "BACKDOORED" if result["backdoored"] else "no backdoor found"
    target = result.get("suspected_target")
    click.echo(f"{model_dir}: {verdict} (anomaly index {result['anomaly_index']:.2f}"
               + (f", suspected target label {target}" if target is not None else "") + ")")
    if report_dir:
        click.echo(f"report: {report_dir}/index.html")


@cli.command("detect-poison", cls=RegistryCommand, listings=[
    ("Detectors (--detector)", lambda: _detectors().entries(level="training-set"))])
@click.argument("model_dir", type=click.Path())
@click.option("--dataset", required=True,
              help="The data set the model was trained on: its training set is rebuilt from the checkpoint when the "
                   "sidecar records the poisoning, else the data set's training images are examined.")
@click.option("--detector", default="activation-clustering", show_default=True,
              help="Training-set detector (listed below).")
@click.option("--clean-budget", "budget", default=1000, show_default=True, type=int,
              help="Clean images from the checkpoint's held-out pool the detector compares against; 0: none (the "
                   "papers' rules).")
@budget_seed_option
@click.option("-o", "--option", "options", multiple=True, metavar="KEY=VALUE",
              help="A detector setting (repeatable), e.g. -o reduction=ica; `backdoorlab list --defaults` shows "
                   "them.")
@click.option("--out", default=None, type=click.Path(file_okay=False),
              help="Write detection.json (with the flagged indices), config.json, scores.png and flagged.png here.")
@click.option("--poison-record", default=None, type=click.Path(),
              help="The record `backdoorlab poison-folder` wrote for this folder (the folder or its poisoning.json): "
                   "adds precision and recall against the files it poisoned.")
@model_arch_option
@json_option
@data_dir_option
@progress_option
@device_options(amp=False)
def detect_poison(model_dir, dataset, detector, budget, budget_seed, options, out, poison_record, named_arch, as_json,
                  data_dir, no_progress, device):
    """Which training images are poisoned? Run a training-set detector on the model's penultimate features.

    Activation clustering splits each label's features in two and flags the cluster the clean images avoid;
    spectral signatures flags the images far out along a label's direction of largest spread. Precision and
    recall are printed when the checkpoint records which images were poisoned; the detector never reads them."""
    from .config import split_pairs
    from .runs.detect_poison import detect_poison_run, training_set_detector
    from .runs.poison_folder import read_record
    opts = training_set_detector(detector).config.parse_options(split_pairs(options), owner=detector)
    record = read_record(poison_record) if poison_record is not None else None
    ds = _dataset(dataset, data_dir, model_dir=model_dir)
    result = detect_poison_run(ds, model_dir, detector=detector, budget_size=budget, budget_seed=budget_seed,
                               out=out, progress=not no_progress, device=device, arch=named_arch,
                               poison_record=record, **opts)
    if as_json:
        click.echo(json.dumps({k: v for k, v in result.items() if k != "per_label"}))
        return
    per_label = ", ".join(f"{k}: {v}" for k, v in result["flagged_per_label"].items()) or "none"
    click.echo(f"{model_dir}: {result['flagged']} of {result['training_images']} training images flagged by "
               f"{detector} (per label: {per_label})")
    if "precision" in result:
        click.echo(f"against the {result['poisoned']} poisoned images the {'record' if record else 'sidecar'} "
                   f"names: precision "
                   f"{_pct(result['precision']).strip()}, recall {_pct(result['recall']).strip()}")
    for w in result["warnings"]:
        click.echo(f"warning: {w}", err=True)
    if out:
        click.echo(f"flagged indices: {out}/detection.json")


def _model_attacks():
    from .attacks import MODEL_ATTACKS
    return MODEL_ATTACKS.entries()


@cli.command(cls=RegistryCommand, listings=[("Model attacks (NAME)", _model_attacks)])
@click.argument("name")
@click.argument("model_dir", type=click.Path())
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--dataset", default=None, help="Data set (default: the one in the model's sidecar).")
@click.option("--epsilon", default=0.01, show_default=True, type=float,
              help="weight-perturbation: l-infinity radius around the original weights.")
@click.option("--steps", default=None, type=int,
              help="Optimisation steps (weight-perturbation: 300; fault-injection: at most 10000).")
@click.option("--step-size", default=None, type=float, help="weight-perturbation: PGD step (default epsilon/100).")
@click.option("--attacker-images", default=None, type=int,
              help="Clean training images the attacker has, not from the defender's held-out pool (default 1000, "
                   "or all if fewer).")
@click.option("--layer", default=None,
              help="Layer to alter (fault-injection: the last hidden layer with weights; single-bias: fc).")
@click.option("--images", "n_images", default=5, show_default=True, type=int,
              help="fault-injection / single-bias: number of chosen test images to flip.")
@click.option("--lr", default=1e-5, show_default=True, type=float, help="fault-injection: Adam learning rate.")
@click.option("-o", "--option", "setting_texts", multiple=True, metavar="KEY=VALUE",
              help="Any other setting of the attack (repeatable; its config's fields, docs/attacks.md), e.g. "
                   "path-backdoor's -o release_t=0.5 -o harden_rounds=2; it overrides the flags above.")
@model_arch_option
@_backdoor_options_trigger
@click.option("--seed", default=0, show_default=True, type=int)
@json_option
@data_dir_option
@progress_option
@device_options(amp=False)
def attack(name, model_dir, out, dataset, epsilon, steps, step_size, attacker_images, layer, n_images, lr,
           setting_texts, named_arch, backdoor_spec, seed, as_json, data_dir, no_progress, device):
    """Attack a trained model by changing its weights (the attacks are listed below).

    Writes OUT/model.safetensors + model.json (the attacked model, the attack recorded in its provenance, so that
    `backdoorlab evaluate OUT` measures it) and OUT/config.json. The trigger options (--trigger, --target, ...)
    are for weight-perturbation and path-backdoor (the trigger the suspect already carries; without them,
    path-backdoor takes the backdoor the suspect's sidecar records, else BadNets' defaults); --target fixes the
    chosen images' label for the fault attacks (default: a random label per image; one shared random label for
    single-bias).
    """
    from .attacks import MODEL_ATTACKS, backdoor_of
    from .models.checkpoint import checked_meta
    from .runs import model_attack_run
    if name not in MODEL_ATTACKS:
        raise BackdoorlabError(f"unknown model attack {name!r}; valid: {valid_names(MODEL_ATTACKS)} (data poisoning "
                               f"and triggerless attacks are planted with `backdoorlab train --attack NAME`)")
    from .config import split_pairs
    entry = MODEL_ATTACKS.entry(name)
    # the settings from the flags its config declares (a flag left unset keeps the config's default), then -o
    flag_values = {"--epsilon": epsilon, "--steps": steps, "--step-size": step_size, "--layer": layer, "--lr": lr,
                   "--seed": seed}
    settings = {field: flag_values[flag] for flag, field in entry.config.flags().items()
                if flag_values[flag] is not None}
    settings.update(entry.config.parse_options(split_pairs(setting_texts), owner=name))
    options = {entry.traits["settings"]: entry.config.from_dict(settings, owner=name)}  # bad values: refused here
    meta = checked_meta(model_dir, named_arch, _canonical(dataset))  # refused before the data loads
    ds = _dataset(meta["dataset"], data_dir, model_dir=model_dir)
    recorded = backdoor_of(meta) if entry.traits["carried_backdoor"] and not _backdoor_given(backdoor_spec) else None
    if recorded is not None:
        options["backdoor"] = recorded  # the backdoor the suspect carries, as its sidecar records it
    elif entry.traits["trigger"]:
        atk = _make_attack(backdoor_spec, ds)
        options["backdoor"] = atk.backdoor
    else:
        given = [k for k in TRIGGER_KEYS if backdoor_spec[k] is not None]
        if given or backdoor_spec["attack"] != "badnets" or backdoor_spec["all_to_all"]:
            raise BackdoorlabError(f"trigger options do not apply to {name}; it flips chosen images, with no trigger")
        targets = _parse_targets(backdoor_spec["target"]) if backdoor_spec["target"] != "0" else None
        if targets is not None and len(targets) != 1:
            raise BackdoorlabError("fault attacks take one --target label")
        options.update(target=targets[0] if targets else None, n_images=n_images)
    summary = model_attack_run(ds, name, model_dir, out, attacker_images=attacker_images, seed=seed,
                               progress=not no_progress, device=device, arch=named_arch, **options)
    if as_json:
        click.echo(json.dumps(summary | {"out": out}))
        return
    click.echo(f"{name} on {model_dir} -> {out} ({summary['seconds']:.0f} s)")
    if recorded is not None:
        click.echo("  backdoor: the one the suspect's sidecar records (trigger options would name another)")
    click.echo("  before:")
    _print_metrics(summary["before"])
    click.echo("  after:")
    _print_metrics(summary["after"])
    r = summary["relative_weight_change"]
    click.echo(f"  relative weight change |dw|/|w|: mean {r['mean']:.4g}, median {r['median']:.4g}, "
               f"90th percentile {r['p90']:.4g}, 99th {r['p99']:.4g}; largest |dw| {r['max_abs_change']:.4g}")


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
    """Download data sets (default: every one with official files: cifar10, fashion-mnist, mnist) into the data
    directory and verify them."""
    from .data import dataset_entry, downloadable_datasets, load_dataset, resolve_data_dir
    names = names or downloadable_datasets()
    for n in names:
        dataset_entry(n)  # an unknown name: one line listing the valid ones
    for n in names:
        ds = load_dataset(n, data_dir, download=True)
        click.echo(f"{n}: {len(ds.train_y)} train / {len(ds.test_y)} test images in {resolve_data_dir(data_dir)}")


@cli.command(name="list")
@click.option("--defaults", is_flag=True,
              help="Also print every attack's, defense's and detector's settings and defaults.")
def list_cmd(defaults):
    """List data sets, architectures, attacks and defenses."""
    from .attacks import MODEL_ATTACKS, TRAINING_ATTACKS
    from .data import list_datasets
    from .data.registry import path_families
    from .defenses.repair import REPAIRERS
    from .detectors import DETECTORS
    from .models import list_models
    click.echo("datasets:      " + ", ".join(list_datasets() + [f"{f}:PATH" for f in path_families()]))
    click.echo("architectures: " + ", ".join(list_models()))
    click.echo("attacks:       " + ", ".join(TRAINING_ATTACKS) + " (backdoorlab train --attack NAME)")
    click.echo("model attacks: " + ", ".join(MODEL_ATTACKS) + " (backdoorlab attack NAME MODEL_DIR)")
    click.echo("defenses:      " + ", ".join(REPAIRERS) + " (backdoorlab repair NAME MODEL_DIR; sanitize)")
    scanned = DETECTORS.names(level="model") + DETECTORS.names(level="input")
    offline = DETECTORS.entries(level="training-set")
    click.echo("detectors:     " + ", ".join(scanned) + " (backdoorlab scan MODEL_DIR); "
               + ", ".join(e.name for e in offline) + " (backdoorlab detect-poison MODEL_DIR --detector NAME)")
    if defaults:
        for name in TRAINING_ATTACKS:
            click.echo(f"  train --attack {name}: " + _settings_line(TRAINING_ATTACKS.defaults(name)))
        for name in MODEL_ATTACKS:
            click.echo(f"  attack {name}: " + _settings_line(MODEL_ATTACKS.defaults(name)))
        for name in REPAIRERS:
            click.echo(f"  {name}: " + _settings_line(REPAIRERS.defaults(name)))
        scan_settings = {k: v for k, v in DETECTORS.defaults("neural-cleanse").items() if k != "seed"}
        click.echo("  scan (neural-cleanse): " + _settings_line(scan_settings))
        for entry in offline:
            click.echo(f"  detect-poison --detector {entry.name}: " + _settings_line(DETECTORS.defaults(entry.name)))
        click.echo("  (augment: `backdoorlab repair` sets it from the data set: the sanitizer's small-budget "
                   "augmentation for fst and mode-connectivity (affine for greyscale data, crop-flip-jpeg for "
                   "cifar10), the data set's training augmentation for the others (none for greyscale data, "
                   "crop-flip-jpeg for cifar10); -o augment=... overrides it)")


def _settings_line(settings: dict) -> str:
    """``key=value, ...``: one line of ``list --defaults``."""
    return ", ".join(f"{k}={v}" for k, v in settings.items())


def _register_commands() -> None:
    from . import cli_evasion, cli_federated, cli_sweep, cli_transfer
    cli_evasion.register(cli)
    cli_sweep.register(cli)
    cli_federated.register(cli)
    cli_transfer.register(cli)


_register_commands()


def main(argv=None) -> int:
    """Entry point: run the CLI, turning user errors into one line and a non-zero exit."""
    warnings.formatwarning = _warning_line
    try:
        cli.main(args=argv, prog_name="backdoorlab", standalone_mode=False)
    except BackdoorlabError as e:
        click.echo(f"error: {e}", err=True)
        return 2
    except StrictFailure as e:
        click.echo(f"error: {e}", err=True)
        return 3
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
