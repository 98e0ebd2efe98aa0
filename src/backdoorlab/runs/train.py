"""``backdoorlab train``: train a model on the non-held-out training images of a data set, clean or with a
backdoor planted at training time, and save it with its sidecar."""

from __future__ import annotations

import time

import torch

from ..budget import default_holdout, training_part
from ..data.registry import training_recipe
from ..device import computes_on_device
from ..errors import BackdoorlabError
from ..metrics import evaluate
from ..models import new_model, save_checkpoint
from ..models.registry import check_trainable
from ..models.sidecar import build_sidecar, dataset_fields, holdout_record, training_record
from ..train import TrainConfig, train_model
from .outputs import check_out_dir

def train_defaults(dataset: str, arch: str) -> dict:
    """The training recipe of ``arch`` on ``dataset`` (epochs, lr, batch size and, where set, augmentation), as
    the data set's registry entry gives it."""
    return training_recipe(dataset, arch)


def train_config(dataset: str, arch: str, epochs=None, lr=None, batch_size=None, augment=None, **fixed) -> TrainConfig:
    """The training recipe for ``arch`` on ``dataset``: the defaults of :func:`train_defaults`, overridden by the
    given (non-None) ``epochs``, ``lr``, ``batch_size`` and ``augment``; ``fixed``: further TrainConfig fields
    (schedule, weight_decay, seed, ...)."""
    check_trainable(arch)
    d = train_defaults(dataset, arch)
    for k, v in dict(epochs=epochs, lr=lr, batch_size=batch_size, augment=augment).items():
        if v is not None:
            d[k] = v
    d.setdefault("augment", "none")
    if d["epochs"] < 1:
        raise BackdoorlabError(f"--epochs must be >= 1, got {d['epochs']}")
    return TrainConfig(**fixed, **d)


@computes_on_device
def train_run(dataset, arch: str, cfg: TrainConfig, attack=None, out: str | None = None, holdout: int | None = None,
              progress: bool = True, desc: str = "train", model_args: dict | None = None, device=None
              ) -> tuple[torch.nn.Module, dict]:
    """Train ``arch`` on the non-held-out training images of ``dataset``, poisoned by ``attack`` if given.

    ``model_args`` go to :func:`create_model` (e.g. ``dropout``); an attack may add its own (``model_args()``),
    poison the data (``poison``) and hook into the training batches (``batch_hook``), or run the training itself
    (``train``: the latent backdoor's teacher, whose ``report`` goes into the provenance). ``device`` (None: auto) and
    ``amp``: where the model trains and whether in mixed precision (see :func:`~backdoorlab.device.computes_on_device`)."""
    check_out_dir(out, "train")
    holdout = default_holdout(dataset.name) if holdout is None else holdout
    x, y = training_part(dataset, holdout)
    provenance, hook, extra = {"attack": None}, None, dict(model_args or {})
    if attack is not None and hasattr(attack, "model_args"):
        extra.update(attack.model_args())
    model = new_model(arch, dataset, cfg.seed, **extra).to(device)  # initialised on the host, as on a CPU run
    trains_itself = attack is not None and hasattr(attack, "train")
    if attack is not None and not trains_itself:
        poisoned = attack.poison(x, y, dataset.num_classes, seed=cfg.seed)
        x, y = poisoned.x, poisoned.y
        hook = attack.batch_hook(poisoned, model) if hasattr(attack, "batch_hook") else None
        provenance = {"attack": attack.to_dict(), "poisoned": len(poisoned.poisoned), "poison_seed": cfg.seed}
    tick = time.time()
    if trains_itself:
        history = attack.train(model, dataset, x, y, cfg, progress=progress, desc=desc)
        provenance = {"attack": attack.to_dict(), "poison_seed": cfg.seed, "report": attack.report}
    else:
        history = train_model(model, x, y, cfg, progress=progress, desc=desc, batch_hook=hook)
    seconds = time.time() - tick
    backdoor = attack.backdoor if attack is not None else None
    metrics = evaluate(model, dataset.test_x, dataset.test_y, backdoor, dataset.num_classes)
    meta = build_sidecar(arch, model.arch_args, dataset.name, **dataset_fields(dataset), seed=cfg.seed,
                         training=training_record(cfg, len(y), seconds, history), holdout=holdout_record(holdout),
                         provenance=provenance, metrics=metrics)
    if out is not None:
        save_checkpoint(model, out, meta)
    return model, meta
