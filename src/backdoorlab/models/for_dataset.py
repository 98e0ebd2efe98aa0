"""Models and data sets that must fit each other: a new model shaped for a data set, and a checkpoint checked
against the data set it is about to be run on (channels, image size, classes) before any work is done."""

from __future__ import annotations

import torch

from backdoorlab.errors import BackdoorlabError
from backdoorlab.models.checkpoint import load_checkpoint
from backdoorlab.models.external import check_outputs, is_external
from backdoorlab.models.registry import create_model


def arch_args(dataset) -> dict:
    """The architecture arguments a data set fixes: classes, channels, image size and the normalisation."""
    return dict(num_classes=dataset.num_classes, in_channels=dataset.in_channels,
                input_size=list(dataset.image_size), mean=list(dataset.mean), std=list(dataset.std))


def new_model(arch: str, dataset, seed: int = 0, **extra) -> torch.nn.Module:
    """A freshly initialised ``arch`` for ``dataset``, its weights drawn after seeding torch with ``seed``.

    For an architecture of the user's own code (``file.py:NAME``), ``extra`` holds its factory's keyword
    arguments as ``kwargs``; its input is normalised with the data set's statistics, and one forward pass checks
    that it takes the data's images and returns one logit per class."""
    torch.manual_seed(seed)
    model = create_model(arch, **arch_args(dataset), **extra)
    if is_external(arch):
        check_outputs(model, dataset.num_classes, dataset.in_channels, list(dataset.image_size), f"--arch {arch}")
    return model


def check_model_fits(meta: dict, dataset, where: str) -> None:
    """Raise if a checkpoint's input shape or class count does not fit ``dataset``."""
    a = meta["arch_args"]
    want = (dataset.in_channels, *dataset.image_size, dataset.num_classes)
    got = (a["in_channels"], *a["input_size"], a["num_classes"])
    if tuple(want) != tuple(got):
        raise BackdoorlabError(f"{where} takes {got[0]}x{got[1]}x{got[2]} images with {got[3]} classes, but "
                               f"{dataset.name} has {want[0]}x{want[1]}x{want[2]} images with {want[3]} classes")


def first_differing_argument(meta_a: dict, meta_b: dict) -> str | None:
    """The first (in sorted order) ``arch_args`` key whose value two sidecars disagree on; None if none."""
    a, b = meta_a["arch_args"], meta_b["arch_args"]
    return next((k for k in sorted(set(a) | set(b)) if a.get(k) != b.get(k)), None)


def check_same_architecture(meta_a: dict, meta_b: dict) -> None:
    """Raise unless two checkpoints' sidecars record one architecture with the same arguments (what a curve
    between them needs), naming the first difference."""
    if meta_a["arch"] != meta_b["arch"]:
        raise BackdoorlabError(f"the two models have different architectures ({meta_a['arch']} vs "
                               f"{meta_b['arch']}); a curve needs two models of the same architecture")
    a, b = meta_a["arch_args"], meta_b["arch_args"]
    key = first_differing_argument(meta_a, meta_b)
    if key is not None:
        raise BackdoorlabError(f"the two models are {meta_a['arch']} with different {key!r} ({a.get(key)!r} vs "
                               f"{b.get(key)!r}); a curve needs two models of the same architecture and arguments")


def load_for(path: str, dataset, arch: str | None = None) -> tuple[torch.nn.Module, dict]:
    """Load a checkpoint and check it fits ``dataset`` (named data set and input shape). ``arch``: the
    architecture the caller names, needed for one of the user's own code (see ``load_checkpoint``)."""
    model, meta = load_checkpoint(path, arch=arch, dataset=dataset.name)
    check_model_fits(meta, dataset, f"checkpoint {path}")
    return model, meta
