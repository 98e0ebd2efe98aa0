"""``backdoorlab adv-train`` and ``distill``: train a model with an evasion defense (PGD adversarial training or
defensive distillation, :mod:`backdoorlab.evasion.defenses`), measure it, and save it with the defense recorded
in its provenance."""

from __future__ import annotations

import time

from torch import nn

from ..budget import default_holdout, training_part
from ..device import computes_on_device
from ..errors import BackdoorlabError
from ..evasion.defenses import AdvTrainConfig, adversarial_training, defensive_distillation
from ..evasion.pgd import PGD
from ..evasion.robustness import robust_accuracy
from ..metrics import evaluate
from ..models import new_model, save_checkpoint
from ..models.sidecar import build_sidecar, dataset_fields, holdout_record, training_record
from ..train import TrainConfig, train_model
from .outputs import check_out_dir


@computes_on_device
def defended_train_run(dataset, arch: str, cfg: TrainConfig, out: str | None, *, adv: AdvTrainConfig | None = None,
                   distill_temperature: float | None = None, progress: bool = True, eval_attack: dict | None = None,
                   eval_images: int = 1000, device=None) -> tuple[nn.Module, dict]:
    """Train ``arch`` on the non-held-out training images of ``dataset`` with a defense: PGD adversarial training
    (``adv``) or defensive distillation (``distill_temperature``); without either, standard training.

    Evaluates clean accuracy on the test set and, with ``eval_attack`` (PGD keyword arguments, e.g.
    ``{"eps": 0.3, "steps": 40}``), robust accuracy on the first ``eval_images`` test images; saves a checkpoint
    to ``out`` whose provenance records the defense."""
    if adv is not None and distill_temperature is not None:
        raise BackdoorlabError("choose one defense: adversarial training or defensive distillation")
    check_out_dir(out, "train")
    holdout = default_holdout(dataset.name)
    x, y = training_part(dataset, holdout)
    model = new_model(arch, dataset, cfg.seed).to(device)  # initialised on the host, as on a CPU run
    tick = time.time()
    if adv is not None:
        history = adversarial_training(model, x, y, cfg, adv, progress=progress)
        defense = {"method": "pgd-adversarial-training", **adv.to_dict()}
    elif distill_temperature is not None:
        model, history = defensive_distillation(model, x, y, cfg, distill_temperature, progress=progress)
        defense = {"method": "defensive-distillation", "temperature": distill_temperature}
    else:
        history = train_model(model, x, y, cfg, progress=progress)
        defense = None
    seconds = time.time() - tick
    metrics = evaluate(model, dataset.test_x, dataset.test_y)
    if eval_attack:
        n = min(eval_images, len(dataset.test_y))
        r = robust_accuracy(model, PGD(model, **eval_attack), dataset.test_x[:n], dataset.test_y[:n])
        metrics["pgd"] = {**PGD(model, **eval_attack).config(), "n": n, "clean_accuracy": r["clean_accuracy"],
                          "robust_accuracy": r["robust_accuracy"]}
    meta = build_sidecar(arch, model.arch_args, dataset.name, **dataset_fields(dataset), seed=cfg.seed,
                         training=training_record(cfg, len(y), seconds, history), holdout=holdout_record(holdout),
                         provenance={"attack": None, "evasion_defense": defense}, metrics=metrics)
    if out is not None:
        save_checkpoint(model, out, meta)
    return model, meta
