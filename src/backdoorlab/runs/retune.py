"""``backdoorlab retune``: the retuning attack on a (repaired) model, beside a clean control, with the
backdoor-connected path.

The model is fine-tuned on a few poisoned images among clean ones drawn from the training part
(:mod:`backdoorlab.defenses.retune`); CA and ASR are measured before and after. A few poisoned images plant some
backdoor in any model, so a clean model of the same recipe (``control_dir``) is retuned the same way on the same
images: the post-retune ASR of a repaired model means something only next to the control's. The report also
holds CA and ASR along the straight line in weight space from the model (t = 0) to its retuned self (t = 1).
"""

from __future__ import annotations

import copy
import pathlib
import time

import torch

from .. import __version__
from ..attacks import backdoor_of
from ..budget import training_part
from ..curves import model_on_line
from ..defenses.qra import QRAConfig, query_reactivation, reactivation_set
from ..defenses.retune import RetuneConfig, retune, retuning_set
from ..device import computes_on_device
from ..errors import BackdoorlabError
from ..io import atomic_write_json
from ..metrics import evaluate
from ..models import Ensemble, check_same_architecture, load_for, save_checkpoint
from ..models.ensemble import ARCH as ENSEMBLE_ARCH, member_meta
from ..models.for_dataset import first_differing_argument
from ..models.sidecar import derived_sidecar, holdout_size, provenance
from ..report import plot_line
from .outputs import check_out_dir

RETUNED_DIR = "retuned"
PATH_POINTS = 5  # t = 0, 0.25, 0.5, 0.75, 1
BN_IMAGES = 500  # clean training images that re-estimate batch norm along the path


def headline(before: dict, after: dict) -> dict:
    """The four figures ``--json`` prints: CA and ASR before and after the retuning attack."""
    return {"clean_accuracy": before["clean_accuracy"], "attack_success_rate": before.get("attack_success_rate"),
            "post_retune_clean_accuracy": after["clean_accuracy"],
            "post_retune_attack_success_rate": after.get("attack_success_rate")}


def load_control(control_dir: str, dataset, meta: dict, arch: str | None) -> torch.nn.Module:
    """The control checkpoint, refused in one line unless it is of the model's data set, architecture and
    held-out pool (the same recipe)."""
    control, control_meta = load_for(control_dir, dataset, arch)
    if control_meta["arch"] != meta["arch"]:
        raise BackdoorlabError(f"--control {control_dir} is a {control_meta['arch']}, the model a {meta['arch']}: "
                               "the control must be a clean model of the same architecture")
    a, b = meta["arch_args"], control_meta["arch_args"]
    key = first_differing_argument(meta, control_meta)
    if key is not None:
        raise BackdoorlabError(f"--control {control_dir} is a {meta['arch']} with {key}={b.get(key)!r}, the model "
                               f"one with {key}={a.get(key)!r}: the control must be of the same architecture")
    if holdout_size(control_meta, dataset.name) != holdout_size(meta, dataset.name):
        raise BackdoorlabError(f"--control {control_dir} was trained with a held-out pool of "
                               f"{holdout_size(control_meta, dataset.name)} images, the model with "
                               f"{holdout_size(meta, dataset.name)}: not the same recipe")
    return control


def suspect_at_model_shape(suspect, suspect_meta: dict, model, meta: dict):
    """The suspect in the form of the repaired model, for the line between them: the suspect itself when both
    are one architecture, or, for a repaired model that averages several networks of the suspect's architecture
    (the sanitizer's averaged export), an ensemble of copies of the suspect, so the line runs from the suspect
    to each member at once. Anything else is a one-line error."""
    if meta["arch"] == ENSEMBLE_ARCH and suspect_meta["arch"] != ENSEMBLE_ARCH:
        check_same_architecture(suspect_meta, member_meta(meta))
        return Ensemble([copy.deepcopy(suspect) for _ in model.members])
    check_same_architecture(suspect_meta, meta)
    return suspect


def line_path(model, retuned, dataset, backdoor, bn_images, before: dict, after: dict,
              points: int = PATH_POINTS) -> list[dict]:
    """CA and ASR at ``points`` evenly spaced t on the line from ``model`` (t = 0) to ``retuned`` (t = 1); the
    endpoints' figures are ``before`` and ``after``, the points between are measured with batch norm
    re-estimated on ``bn_images``."""
    rows = []
    for t in torch.linspace(0, 1, points).tolist():
        if t in (0.0, 1.0):
            m = before if t == 0.0 else after
        else:
            m = evaluate(model_on_line(model, retuned, t, bn_images), dataset.test_x, dataset.test_y, backdoor,
                         dataset.num_classes)
        rows.append({"t": round(t, 4), "clean_accuracy": m["clean_accuracy"],
                     "attack_success_rate": m.get("attack_success_rate")})
    return rows


@computes_on_device
def retune_run(dataset, model_dir: str, out: str | None = None, *, backdoor=None, control_dir: str | None = None,
               cfg: RetuneConfig | None = None, arch: str | None = None, device=None, progress: bool = True,
               path_points: int = PATH_POINTS, suspect_dir: str | None = None, qra: QRAConfig | None = None) -> dict:
    """The retuning attack on the checkpoint ``model_dir`` (and on ``control_dir``, a clean model of the same
    recipe, when given) with ``cfg`` (None: :class:`RetuneConfig`'s defaults).

    ``backdoor``: the backdoor to retune and measure (None: the one the model's sidecar records; a model that
    records none and no backdoor given is a one-line error). Returns the report: :func:`headline`'s four figures,
    ``before``/``after`` (full metrics), ``control`` (its four figures, or None), ``path`` (CA and ASR along the
    line model -> retuned), ``retuning_set`` (sizes and training-set indices) and ``seconds``. With ``out``:
    writes ``report.json``, ``config.json``, ``path.png`` and the retuned model in ``out/retuned``. ``arch``: the
    architecture to load a model of the user's own code; ``device`` (None: auto), ``amp``: as the other runs.

    ``suspect_dir``: the backdoored model the repaired one came from; the report then also holds
    ``suspect_path``, CA and ASR along the line from the suspect (t = 0) to the model (t = 1), the first leg of
    the backdoor-connected path (``suspect_path.png``): a repair that stays where the ASR is still high close to
    it has moved little from the suspect along that path.

    ``qra``: also run the query-based reactivation attack with these settings (:mod:`..defenses.qra`; it needs
    the control): the report's ``qra`` holds its ASR on the model and on the control."""
    cfg = cfg or RetuneConfig()
    if qra is not None and control_dir is None:
        raise BackdoorlabError("the query-based reactivation attack needs a clean model of the same recipe: "
                               "give --control")
    if path_points < 2:
        raise BackdoorlabError(f"the path needs at least 2 points, got {path_points}")
    check_out_dir(out, "retune", [p for p in (model_dir, control_dir, suspect_dir) if p is not None])
    model, meta = load_for(model_dir, dataset, arch)
    control = load_control(control_dir, dataset, meta, arch) if control_dir is not None else None
    suspect = None
    if suspect_dir is not None:
        suspect, suspect_meta = load_for(suspect_dir, dataset, arch)
        suspect = suspect_at_model_shape(suspect, suspect_meta, model, meta)
    if backdoor is None:
        backdoor = backdoor_of(meta)
    if backdoor is None:
        raise BackdoorlabError(f"checkpoint {model_dir} records no attack: give the backdoor to retune with "
                               "(--attack and its trigger options)")
    backdoor.check(dataset.num_classes)
    holdout = holdout_size(meta, dataset.name)
    rset = retuning_set(dataset, backdoor, cfg, holdout)
    if qra is not None:
        reactivation_set(dataset, backdoor, qra, holdout)  # a set too large is refused before any training
    model.to(device)
    test = (dataset.test_x, dataset.test_y, backdoor, dataset.num_classes)
    tick = time.time()
    before = evaluate(model, *test)
    retuned = retune(model, rset.x, rset.y, cfg, progress=progress)
    after = evaluate(retuned, *test)
    x_part, _ = training_part(dataset, holdout)
    bn_pick = torch.randperm(len(x_part), generator=torch.Generator().manual_seed(cfg.seed))[:BN_IMAGES]
    path = line_path(model, retuned, dataset, backdoor, x_part[bn_pick], before, after, path_points)
    suspect_path = None
    if suspect is not None:
        suspect.to(device)
        suspect_path = line_path(suspect, model, dataset, backdoor, x_part[bn_pick], evaluate(suspect, *test), before,
                                 path_points)
    control_report = None
    if control is not None:
        control.to(device)
        control_before = evaluate(control, *test)
        control_after = evaluate(retune(control, rset.x, rset.y, cfg, progress=progress), *test)
        control_report = {"model": str(control_dir), **headline(control_before, control_after),
                          "before": control_before, "after": control_after}
    qra_report = None
    if qra is not None:
        qra_report = query_reactivation(dataset, backdoor, model, retuned, control, qra, holdout)
    report = {**headline(before, after), "control": control_report, "qra": qra_report, "before": before,
              "after": after, "path": path, "suspect_path": suspect_path,
              "retuning_set": {"poison_images": cfg.poison_images, "clean_images": cfg.clean_images,
                               "indices": rset.indices.tolist(), "poisoned": rset.poisoned.tolist()},
              "seconds": round(time.time() - tick, 1)}
    if out is None:
        return report
    out_dir = pathlib.Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    record = {"from": str(model_dir), "config": cfg.to_dict(), "backdoor": backdoor.to_dict()}
    save_checkpoint(retuned, out_dir / RETUNED_DIR,
                    derived_sidecar(meta, seed=cfg.seed, metrics=after,
                                    provenance={**provenance(meta), "retuned": record}))
    plot_line(path, out_dir / "path.png", "t   (0 = the model, 1 = the model after the retuning attack)",
              title=f"retuning attack, {dataset.name}, {meta['arch']}, {cfg.poison_images} poisoned + "
                    f"{cfg.clean_images} clean images")
    if suspect_path is not None:
        plot_line(suspect_path, out_dir / "suspect_path.png", "t   (0 = the suspect, 1 = the repaired model)",
                  title=f"from the suspect to the repaired model, {dataset.name}, {meta['arch']}")
    config = {"command": "retune", "model": str(model_dir), "control": control_dir, "suspect": suspect_dir,
              "dataset": dataset.name,
              "holdout": holdout, "options": cfg.to_dict(), "backdoor": backdoor.to_dict(),
              "path_points": path_points, "qra": qra.to_dict() if qra is not None else None,
              "backdoorlab_version": __version__}
    atomic_write_json(out_dir / "report.json", report)
    atomic_write_json(out_dir / "config.json", config)
    return report
