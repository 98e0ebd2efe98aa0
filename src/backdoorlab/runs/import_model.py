"""``backdoorlab import``: turn a state dict saved elsewhere into a backdoorlab checkpoint.

The engineer's suspect model is a state dict of an architecture of their own (or one of backdoorlab's). The run
reads the weights without running code (:mod:`backdoorlab.models.weights_file`), builds the architecture for the
data set (its classes, channels and image size; ``mean``/``std`` put the normalisation the model expects in front
of it), checks that every key and shape fits, runs the model once on the data's shape, measures its clean
accuracy, and saves the checkpoint (``model.safetensors`` with the user's own keys, ``model.json``) and the run's
``config.json``. Every other command then takes the directory like a model backdoorlab trained itself; for an
architecture of the user's own code they name it again (``--arch``), since a checkpoint never imports code.

The held-out pool recorded is the data set's default one, as for a model trained here: clean budgets are drawn
from it, so the defender's images should be ones the model was not trained on.
"""

from __future__ import annotations

import pathlib

import torch

from .. import __version__
from ..budget import default_holdout
from ..device import computes_on_device
from ..errors import BackdoorlabError
from ..io import atomic_write_json
from ..metrics import evaluate
from ..models import Normalize, arch_args, create_model, save_checkpoint
from ..models.external import check_outputs, is_external
from ..models.registry import check_trainable
from ..models.sidecar import build_sidecar, dataset_fields, holdout_record
from ..models.weights_file import first_mismatch, read_state_dict
from .outputs import check_out_dir


def build_for_import(arch: str, dataset, model_args: dict | None = None, mean=None, std=None) -> torch.nn.Module:
    """A fresh ``arch`` shaped for ``dataset``: code of the user's own gets ``model_args`` as its factory's keyword
    arguments and ``mean``/``std`` (or none) as its input normalisation; a registered architecture takes
    ``model_args`` as extra builder arguments and its normalisation from the weights."""
    check_trainable(arch)
    model_args = dict(model_args or {})
    inputs = arch_args(dataset)
    if is_external(arch):
        inputs.update(mean=mean, std=std)
        return create_model(arch, **inputs, kwargs=model_args)
    if mean is not None or std is not None:
        raise BackdoorlabError(f"{arch} normalises its input with the mean/std stored in its weights; --mean/--std "
                               "are for architectures of your own code")
    return create_model(arch, **inputs, **model_args)


def _normalisation_from_weights(model: torch.nn.Module) -> dict:
    """The mean/std that a registered architecture's Normalize layer holds after loading (for its arch_args)."""
    layer = next((m for m in model.modules() if isinstance(m, Normalize)), None)
    return {} if layer is None else {"mean": layer.mean.tolist(), "std": layer.std.tolist()}


@computes_on_device
def import_run(weights: str, arch: str, dataset, out: str | None = None, model_args: dict | None = None,
               mean=None, std=None, device=None) -> tuple[torch.nn.Module, dict]:
    """Import the state dict in ``weights`` as ``arch`` for ``dataset``; save it to ``out`` (None: do not save).
    Returns ``(model, sidecar)``; the sidecar's ``metrics`` hold the clean accuracy on the test set. Everything
    is checked (architecture, weights, shapes, one forward pass) before anything is written. ``device``: where
    the model is evaluated (None: auto)."""
    check_out_dir(out, "import")
    state, source = read_state_dict(weights)
    model = build_for_import(arch, dataset, model_args, mean, std)
    problem = first_mismatch(model.state_dict(), state)
    if problem:
        raise BackdoorlabError(f"{weights} does not fit {arch}: {problem}")
    model.load_state_dict(state, strict=True)
    model.to(device)
    if not is_external(arch):
        model.arch_args = {**model.arch_args, **_normalisation_from_weights(model)}
    check_outputs(model, dataset.num_classes, dataset.in_channels, list(dataset.image_size),
                  f"{arch} with the weights of {weights}")
    model.eval()
    metrics = evaluate(model, dataset.test_x, dataset.test_y, None, dataset.num_classes)
    holdout = default_holdout(dataset.name)
    meta = build_sidecar(arch, model.arch_args, dataset.name, **dataset_fields(dataset),
                         holdout=holdout_record(holdout), provenance={"imported": source}, metrics=metrics)
    if out is not None:
        out_dir = pathlib.Path(out)
        config = {"command": "import", "weights": source, "arch": arch, "arch_args": model.arch_args,
                  "dataset": dataset.name, "backdoorlab_version": __version__}
        save_checkpoint(model, out_dir, meta)
        atomic_write_json(out_dir / "config.json", config)
    return model, meta
