"""``backdoorlab attack``: change a trained checkpoint's weights with a model attack and save the result."""

from __future__ import annotations

import pathlib
import time

import torch

from .. import __version__
from ..attacks import MODEL_ATTACKS, ModelAttackData, agreement
from ..budget import training_part
from ..device import computes_on_device
from ..errors import BackdoorlabError
from ..io import atomic_write_json
from ..metrics import evaluate
from ..models import load_for, save_checkpoint
from ..models.sidecar import derived_sidecar, holdout_size
from .outputs import check_out_dir


@computes_on_device
def model_attack_run(dataset, name: str, model_dir: str, out: str, *, backdoor=None, awp=None, fault=None,
                     settings=None, target: int | None = None, n_images: int = 5, attacker_images: int | None = None,
                     seed: int = 0, progress: bool = True, device=None, arch: str | None = None) -> dict:
    """Attack a trained checkpoint by changing its weights (``weight-perturbation``, ``fault-injection``,
    ``single-bias`` or ``path-backdoor``; the settings go in the keyword its registry entry names: ``awp``,
    ``fault`` or ``settings``); write the attacked checkpoint and ``config.json`` to ``out``; return a summary with the
    metrics before and after, the agreement with the original model and the relative weight change. ``device``:
    where the model runs (None: auto)."""
    entry = MODEL_ATTACKS.entry(name)  # an unknown name: one line listing the valid ones
    check_out_dir(out, "attack", [model_dir])
    model, meta = load_for(model_dir, dataset, arch)
    model.to(device)
    holdout = holdout_size(meta, dataset.name)
    x_train, y_train = training_part(dataset, holdout)
    if attacker_images is None:
        attacker_images = min(1000, len(y_train))
    if not 1 <= attacker_images <= len(y_train):
        raise BackdoorlabError(f"the attacker's images must number 1..{len(y_train)}, got {attacker_images}")
    pick = torch.randperm(len(y_train), generator=torch.Generator().manual_seed(seed))[:attacker_images]
    xa, ya = x_train[pick], y_train[pick]
    test_x, test_y, k = dataset.test_x, dataset.test_y, dataset.num_classes
    tick = time.time()
    settings = {"awp": awp, "fault": fault, "settings": settings}[entry.traits["settings"]]
    data = ModelAttackData(xa, ya, test_x, test_y, k, backdoor=backdoor, target=target, n_images=n_images, seed=seed,
                           progress=progress, dataset_name=dataset.name)
    attacked, report, backdoor = entry.run(model, settings, data)
    seconds = time.time() - tick
    before = evaluate(model, test_x, test_y, backdoor, k)
    after = evaluate(attacked, test_x, test_y, backdoor, k)
    after["agreement"] = agreement(model, attacked, test_x)
    attack_spec = {"name": name, **backdoor.to_dict()}
    new_meta = derived_sidecar(meta, seed=seed, metrics=after,
                               provenance={"attack": attack_spec, "attacked_from": str(model_dir),
                                           "original_provenance": meta.get("provenance"),
                                           "report": {k2: v for k2, v in report.items() if k2 != "config"}})
    save_checkpoint(attacked, out, new_meta)
    config = {"command": "attack", "attack": name, "model": str(model_dir), "dataset": dataset.name,
              "settings": report.get("config", {"layer": report.get("layer")}),
              "attacker_images": attacker_images, "seed": seed, "backdoor": backdoor.to_dict(),
              "backdoorlab_version": __version__}
    atomic_write_json(pathlib.Path(out) / "config.json", config)
    return {"attack": name, "before": before, "after": after, "seconds": round(seconds, 1),
            "relative_weight_change": report["relative_weight_change"],
            **{k2: report[k2] for k2 in ("success", "steps", "layer", "unit", "change") if k2 in report}}
