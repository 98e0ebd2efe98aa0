"""``backdoorlab federated``: run a federation on Flower (optionally with an attacker and a server defense) and
write what it did.

Writes into ``out``:

- ``rounds.json``: one record per round (round 0: the starting model): clean accuracy and attack success rate of
  the global model on the data set's test set, whether it was an attack round, which clients trained, which were
  malicious, the norm of every update, the clipping bound, seconds (the round, each client's training, the
  evaluation); and ``final``, the final global model's metrics;
- ``rounds.png``: CA and ASR per round, attack rounds marked;
- ``global/``: the final global model as a backdoorlab checkpoint, whose sidecar records the data set, the
  architecture, the held-out pool no client held and the planted attack, so ``backdoorlab evaluate OUT/global``
  measures its ASR and ``scan``, ``sanitize --clean-budget N`` and ``repair`` take it (the budget comes from the
  pool, images no client trained on);
- ``config.json``: every setting, the seeds, the command line, the versions of backdoorlab, Flower and Ray, the
  machine.

Every file is written atomically; nothing is written until the federation has run.
"""

from __future__ import annotations

import pathlib
import time

from .. import __version__
from ..errors import BackdoorlabError
from ..federated.settings import FederationSettings, attack_record
from ..io import atomic_write_json
from ..machine import machine
from ..metrics import evaluate
from ..models import load_for, new_model, save_checkpoint
from ..models.external import is_external
from ..models.sidecar import build_sidecar, dataset_fields, holdout_record, holdout_size
from .outputs import check_out_dir

GLOBAL_DIR = "global"
ROUND_KEYS = ("round", "clean_accuracy", "attack_success_rate")


def _versions() -> dict:
    from importlib.metadata import PackageNotFoundError, version
    out = {"backdoorlab": __version__}
    for name in ("flwr", "ray", "torch"):
        try:
            out[name] = version(name)
        except PackageNotFoundError:
            out[name] = None
    return out


def _start_model(dataset, settings: FederationSettings, start_from):
    """The initial global model: ``start_from``'s (checked: same architecture and held-out pool) or a new one."""
    if start_from is None:
        return new_model(settings.arch, dataset, settings.seed)
    model, meta = load_for(start_from, dataset)
    if meta["arch"] != settings.arch:
        raise BackdoorlabError(f"--start-from {start_from} is a {meta['arch']} model, not --arch {settings.arch}")
    pool = holdout_size(meta, dataset.name)
    if pool != settings.holdout:
        raise BackdoorlabError(f"--start-from {start_from} was trained without a held-out pool of {pool} images; the "
                               f"federation keeps {settings.holdout} out of every client's data")
    return model


def federated_run(dataset, settings: FederationSettings, out, start_from: str | None = None, progress: bool = True,
                  verbose: bool = False, command: str | None = None) -> dict:
    """Run the federation ``settings`` on ``dataset`` (loaded; ``settings.dataset`` is its name) from a new model
    or the checkpoint ``start_from``, and write its outputs to ``out`` (see the module docstring). Returns what
    ``--json`` prints: ``rounds`` (round, clean_accuracy, attack_success_rate), ``final``, ``out``, ``seconds``."""
    from ..federated.simulation import run_federation
    settings.check()
    if is_external(settings.arch):
        raise BackdoorlabError(f"backdoorlab federated trains the built-in architectures; --arch {settings.arch} is "
                               "code of your own")
    if settings.dataset != dataset.name:
        raise BackdoorlabError(f"the settings are for {settings.dataset}, the data set given is {dataset.name}")
    inputs = [start_from] if start_from is not None else []
    out_dir = pathlib.Path(out)
    check_out_dir(out_dir, "federated", inputs)
    check_out_dir(out_dir / GLOBAL_DIR, "federated", inputs)
    initial = _start_model(dataset, settings, start_from)
    backdoor = settings.attack.backdoor if settings.attack is not None else None
    tick = time.time()
    model, rounds = run_federation(settings, initial, dataset, backdoor, progress=progress, verbose=verbose)
    seconds = time.time() - tick
    final = evaluate(model, dataset.test_x, dataset.test_y, backdoor, dataset.num_classes)
    final.setdefault("attack_success_rate", None)

    record = {"rounds": settings.rounds, "clients": settings.clients, "per_round": settings.per_round,
              "partition": settings.partition, "alpha": settings.alpha if settings.partition == "dirichlet" else None,
              "defense": settings.defense, "clip_norm": rounds[-1].get("clip_norm"),
              "attackers": list(settings.attackers), "attack_rounds": list(settings.attack_rounds),
              "boost": settings.boost if settings.attack is not None else None,
              "constrain_and_scale": settings.constrain, "started_from": start_from}
    training = {"federated": True, "epochs": settings.local_epochs, "lr": settings.lr,
                "batch_size": settings.batch_size, "momentum": settings.momentum,
                "weight_decay": settings.weight_decay, "schedule": "constant", "augment": "none",
                "seed": settings.seed, "seconds": round(seconds, 1)}
    provenance = {"attack": attack_record(settings.attack), "federated": record}
    meta = build_sidecar(settings.arch, model.arch_args, dataset.name, **dataset_fields(dataset), seed=settings.seed,
                         training=training, holdout=holdout_record(settings.holdout), provenance=provenance,
                         metrics=final)
    out_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(model, out_dir / GLOBAL_DIR, meta)
    atomic_write_json(out_dir / "rounds.json", {"rounds": rounds, "final": final, "seconds": round(seconds, 1)})
    from .federated_plot import plot_rounds
    title = (f"{dataset.name}, {settings.arch}, {settings.clients} clients, {settings.per_round} per round, "
             f"defense {settings.defense}" + (f", {settings.attack_name} by {list(settings.attackers)}"
                                              if settings.attack is not None else ""))
    plot_rounds(rounds, out_dir / "rounds.png", title)
    atomic_write_json(out_dir / "config.json", {
        "command": "federated", "command_line": command, "dataset": dataset.name, "start_from": start_from,
        "settings": settings.to_dict(), "versions": _versions(), "machine": machine(), "seconds": round(seconds, 1)})
    return {"rounds": [{k: r.get(k) for k in ROUND_KEYS} for r in rounds],
            "final": {"clean_accuracy": final["clean_accuracy"], "attack_success_rate": final["attack_success_rate"]},
            "out": str(out_dir), "global": str(out_dir / GLOBAL_DIR), "seconds": round(seconds, 1)}
