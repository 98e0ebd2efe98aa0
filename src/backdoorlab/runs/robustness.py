"""``backdoorlab robustness``: clean and robust accuracy of a checkpoint under an evasion attack on the test set,
optionally behind an input defense (JPEG, attacked with or without BPDA); writes ``robustness.json`` (and a
fitted patch's ``patch.png``)."""

from __future__ import annotations

import pathlib
import time

import torch

from ..budget import training_part
from ..device import computes_on_device
from ..errors import BackdoorlabError
from ..evasion import EVASION_ATTACKS, JpegDefense, make_attack, parse_eps, robust_accuracy
from ..evasion.build import names_text
from ..io import atomic_write_json
from ..models import load_for
from ..models.sidecar import holdout_size

INPUT_DEFENSES = ("none", "jpeg")


def check_robustness_options(attack: str, eps, target: int | None, defense: str, bpda: bool) -> float | None:
    """Refuse, before any data is loaded, settings that do not go together; return ``eps`` parsed (or None)."""
    entry = EVASION_ATTACKS.entry(attack)
    if defense not in INPUT_DEFENSES:
        raise BackdoorlabError(f"unknown input defense {defense!r}; valid: 'jpeg', 'none'")
    if bpda and defense == "none":
        raise BackdoorlabError("--bpda attacks an input defense: give --defense jpeg")
    if entry.traits["eps"]:
        if eps is None:
            raise BackdoorlabError(f"the {attack} attack needs --eps (e.g. 0.3 or 8/255)")
        eps = parse_eps(eps)
    elif eps is not None:
        raise BackdoorlabError(f"--eps does not apply to the {attack} attack (it is for "
                               f"{names_text(EVASION_ATTACKS.names(eps=True))})")
    if entry.traits["targeted_only"] and target is None:
        raise BackdoorlabError(f"the {attack} attack is targeted: give --target")
    return eps


@computes_on_device
def robustness_run(dataset, model_dir: str, attack: str = "pgd", eps: str | float | None = None, *,
                   target: int | None = None, settings: dict | None = None, n_images: int | None = None,
                   batch_size: int = 500,
                   defense: str = "none", jpeg_quality: int = 75, bpda: bool = False, patch_images: int = 2000,
                   out: str | None = None, seed: int = 0, progress: bool = True, device=None,
                   arch: str | None = None) -> dict:
    """Attack the checkpoint in ``model_dir`` with evasion attack ``attack`` on the first ``n_images`` test images
    (default: all, or the attack's own default) and return clean and robust accuracy and loss.

    ``target``: a targeted attack towards this label. ``settings``: the attack's other config fields (``steps``,
    ``step_size``, ``restarts``, ``loss``, ...), as values or command-line text. An attack that is fitted
    (the adversarial patch) is fitted on ``patch_images`` training images outside the held-out pool. ``defense="jpeg"`` puts JPEG compression at
    ``jpeg_quality`` in front of the model; ``bpda`` attacks it with the identity as its gradient."""
    entry = EVASION_ATTACKS.entry(attack)
    settings = dict(settings or {})
    eps = check_robustness_options(attack, eps, target, defense, bpda)
    model, meta = load_for(model_dir, dataset, arch)
    model.to(device)
    if target is not None and not 0 <= target < dataset.num_classes:
        raise BackdoorlabError(f"target label {target} is out of range for {dataset.num_classes} classes")
    victim = JpegDefense(model, jpeg_quality) if defense == "jpeg" else model
    attacked = victim.attackable(True) if bpda else victim
    if "target" in entry.config.option_names():
        settings["target"] = target
    kw = entry.config.parse_options(settings, owner=attack)
    if entry.traits["fitted"]:
        kw["progress"] = progress
    atk = make_attack(attack, attacked, eps, **kw)
    n = len(dataset.test_y) if n_images is None else min(n_images, len(dataset.test_y))
    if entry.traits["default_images"] is not None and n_images is None:
        n = min(entry.traits["default_images"], len(dataset.test_y))
    x, y = dataset.test_x[:n], dataset.test_y[:n]
    tick = time.time()
    extra = {}
    if entry.traits["fitted"]:
        xt, yt = training_part(dataset, holdout_size(meta, dataset.name))
        pick = torch.randperm(len(yt), generator=torch.Generator().manual_seed(seed))[:patch_images]
        atk.fit(xt[pick], yt[pick])
        if out is not None:
            pathlib.Path(out).mkdir(parents=True, exist_ok=True)
            atk.save_png(pathlib.Path(out) / "patch.png")
            extra["patch_png"] = str(pathlib.Path(out) / "patch.png")
    r = robust_accuracy(victim, atk, x, y, batch_size=batch_size, progress=progress, target=target)
    result = {"model": str(model_dir), "dataset": dataset.name, "attack": atk.config(),
              "defense": None if defense == "none" else {"name": "jpeg", "quality": jpeg_quality, "bpda": bpda},
              **r, **extra, "seconds": round(time.time() - tick, 1)}
    if out is not None:
        pathlib.Path(out).mkdir(parents=True, exist_ok=True)
        atomic_write_json(pathlib.Path(out) / "robustness.json", result)
    return result
