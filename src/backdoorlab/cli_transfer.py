"""The ``backdoorlab transfer`` command: a student built from a teacher checkpoint by transfer learning (the
victim's ordinary step; :mod:`backdoorlab.runs.transfer`). ``register(cli_group)`` adds it to the ``backdoorlab``
group."""

from __future__ import annotations

import json

import click

from .cli_device import device_options
from .cli_options import json_option, model_arch_option


def _print(meta: dict, out: str) -> None:
    from .cli import _print_metrics
    t = meta["provenance"]["transfer"]
    click.echo(f"student of {t['teacher']} ({t['teacher_dataset']}) on {meta['dataset']}, trained layers "
               f"{', '.join(t['trained_layers'])} in {meta['training']['seconds']:.0f} s -> {out}")
    click.echo(f"  backdoor: {t['backdoor']}")
    _print_metrics(meta["metrics"])


@click.command()
@click.argument("teacher_dir", type=click.Path())
@click.option("--dataset", required=True,
              help="The student's data set (a class subset such as mnist[5-9] for a teacher of mnist[0-4]); its "
                   "images must have the teacher's size and channels.")
@click.option("--trainable-layers", "trainable_layers", default=1, show_default=True, type=int,
              help="How many of the last layers are trained (1: the new classifier alone); the others keep the "
                   "teacher's weights. `backdoorlab transfer --help` lists what a layer is.")
@click.option("--out", required=True, type=click.Path(file_okay=False), help="Output directory.")
@click.option("--epochs", default=None, type=int, help="Training epochs (default: the data set's recipe).")
@click.option("--lr", default=None, type=float, help="Peak learning rate (default: the data set's recipe).")
@click.option("--batch-size", default=None, type=int)
@click.option("--augment", default=None, help="Augmentation (default: the data set's training augmentation).")
@click.option("--seed", default=0, show_default=True, type=int, help="Seeds the new classifier and the training.")
@model_arch_option
@json_option
@click.option("--data-dir", default=None, type=click.Path(file_okay=False),
              help="Data directory (default: $BACKDOORLAB_DATA, else a per-user cache directory).")
@click.option("--no-progress", is_flag=True, help="Hide progress bars.")
@device_options()
def transfer(teacher_dir, dataset, trainable_layers, out, epochs, lr, batch_size, augment, seed, named_arch, as_json,
             data_dir, no_progress, device, amp):
    """Build a student from the teacher in TEACHER_DIR by transfer learning: its classifier replaced by a new one
    for the data set's classes, every layer but the last --trainable-layers frozen, the rest trained on the data
    set's training part. Writes OUT/model.safetensors + model.json and OUT/config.json.

    Layers, from the input: each child of the model's body that holds weights (with the pooling or activation
    after it), then fc; small-cnn has body.0, body.2, body.5, fc; resnet20 body.0 .. body.9, fc. The student's
    sidecar records the teacher and its backdoor as it applies to the student's labels (a latent backdoor's target
    class found by name), so `backdoorlab evaluate OUT` measures it."""
    from .cli import _dataset
    from .runs import train_config, transfer_run
    from .models.checkpoint import checked_meta
    meta = checked_meta(teacher_dir, named_arch)  # refused before the data loads
    ds = _dataset(dataset, data_dir, model_dir=teacher_dir)
    cfg = train_config(ds.name, meta["arch"], epochs, lr, batch_size, augment, seed=seed)
    _, student = transfer_run(ds, teacher_dir, out, trainable_layers, cfg, progress=not no_progress,
                              arch=named_arch, device=device, amp=amp)
    if as_json:
        m = student["metrics"]
        click.echo(json.dumps({"attack_success_rate": None, "robust_accuracy": None} | m
                              | {"backdoor": student["provenance"]["attack"],
                                 "note": student["provenance"]["transfer"]["backdoor"], "out": out}))
    else:
        _print(student, out)


def register(cli_group: click.Group) -> click.Group:
    """Add ``transfer`` to ``cli_group`` (the ``backdoorlab`` group); returns it."""
    if "transfer" not in cli_group.commands:
        cli_group.add_command(transfer)
    return cli_group
