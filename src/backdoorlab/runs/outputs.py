"""Where a run writes: the output-directory policy shared by every run that saves a checkpoint, and the model a
run saves (an ensemble under its own architecture)."""

from __future__ import annotations

import json
import os
import pathlib

import torch

from ..errors import BackdoorlabError
from ..models import Ensemble
from ..models.checkpoint import META_FILE, read_meta
from ..models.sidecar import provenance

# the commands that write a config.json naming themselves next to the checkpoint they save
CONFIG_WRITERS = ("sanitize", "repair", "attack", "import", "transfer")


def written_by(out_dir: pathlib.Path, meta: dict) -> str:
    """Which command wrote the checkpoint in ``out_dir`` (its sidecar ``meta``): the ``command`` of the
    ``config.json`` that sanitize, repair, attack, import and transfer write next to it, ``federated`` for a federation's
    global model (its provenance says so), else ``train`` (which writes none)."""
    try:
        command = json.loads((out_dir / "config.json").read_text()).get("command")
    except (OSError, ValueError, AttributeError):
        command = None
    if command in CONFIG_WRITERS:
        return command
    if "federated" in provenance(meta):  # the global model of `backdoorlab federated`, in its OUT/global
        return "federated"
    return "sanitize" if "second_endpoint" in provenance(meta) else "train"


def check_out_dir(out: str | os.PathLike | None, command: str, inputs=()) -> None:
    """Refuse, before any work, an output directory whose checkpoint would be lost: one of the ``inputs`` (the
    model being read), or a directory holding a checkpoint that another command wrote (``backdoorlab train``'s
    model in ``runs/clean``, say). A directory that the same command wrote before is overwritten: a rerun."""
    if out is None:
        return
    out_dir = pathlib.Path(out)
    if not out_dir.exists():
        return
    for p in inputs:
        src = pathlib.Path(p)
        src = src.parent if src.is_file() else src
        if src.exists() and out_dir.resolve() == src.resolve():
            raise BackdoorlabError(f"--out {out} is the model directory {p} being read; writing there would replace "
                                   "that model: choose another --out")
    if not (out_dir / META_FILE).is_file():
        return
    try:
        previous = written_by(out_dir, read_meta(out_dir))
    except BackdoorlabError:
        raise BackdoorlabError(f"--out {out} already holds {META_FILE}, not a readable backdoorlab checkpoint: "
                               "choose another --out or remove it") from None
    if previous != command:
        raise BackdoorlabError(f"--out {out} already holds a model written by `backdoorlab {previous}`; "
                               f"`backdoorlab {command}` would replace it: choose another --out or remove it")


def model_arch(model: torch.nn.Module, arch: str, args: dict) -> tuple[str, dict]:
    """The (arch, arch_args) to save ``model`` under: its own for an :class:`~backdoorlab.models.Ensemble` (a
    sanitizer's average of two path points), else the suspect's ``arch`` / ``args`` it was made from."""
    if isinstance(model, Ensemble):
        if getattr(model, "arch", None) is None:
            raise BackdoorlabError("cannot save an ensemble whose members are not one registry architecture")
        return model.arch, model.arch_args
    return arch, args
