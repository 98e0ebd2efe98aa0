"""What one job of a sweep does, in whichever process runs it: make a model, or measure a cell, with the same runs
the CLI uses (``train``, ``attack``, ``repair``, ``scan``, ``detect-poison``, ``retune``).

Every job writes into a fresh temporary folder and renames it into place when it is complete, with its
``result.json`` inside, so a job killed half-way leaves nothing that looks done, and a job run twice (a retried
task whose first run finished) returns the result already there. A job that fails returns (and records) its
one-line error instead of raising: one bad cell never stops the grid.
"""

from __future__ import annotations

import functools
import json
import os
import pathlib
import shutil
import time
import uuid

from ..errors import BackdoorlabError
from ..io import atomic_write_json
from ..machine import machine
from .attack_recipes import model_attack_options, training_attack

RESULT = "result.json"
MODELS, CELLS = "models", "cells"


def job_dir(out: str | os.PathLike, kind: str, key: str) -> pathlib.Path:
    """Where the job ``key`` keeps its outputs: ``OUT/models/KEY`` or ``OUT/cells/KEY``."""
    return pathlib.Path(out) / (MODELS if kind == "model" else CELLS) / key


def finished(out, kind: str, key: str) -> dict | None:
    """The saved result of a job that completed (failed jobs are run again), else None."""
    path = job_dir(out, kind, key) / RESULT
    if not path.is_file():
        return None
    result = read_json(path)
    return result if result.get("status") == "ok" else None


def read_json(path) -> dict:
    return json.loads(pathlib.Path(path).read_text())


@functools.lru_cache(maxsize=4)
def _dataset(name: str, data_dir: str | None):
    """Each worker loads a data set once and keeps it for the next cells."""
    from ..data import load_dataset
    return load_dataset(name, data_dir)


def run_job(kind: str, key: str, recipe: dict, out: str, data_dir: str | None = None, threads: int = 1) -> dict:
    """Run one job (see the module docstring); returns its result: ``status`` ("ok" or "failed"), ``error``,
    ``seconds``, ``machine`` and what the job measured."""
    import torch
    torch.set_num_threads(threads)
    done = finished(out, kind, key)
    if done is not None:
        return done
    final = job_dir(out, kind, key)
    work = final.parent / f".tmp-{key}-{uuid.uuid4().hex[:8]}"
    work.mkdir(parents=True)
    tick = time.time()
    try:
        measured = {"status": "ok", "error": None, **JOBS[kind](recipe, out, work, data_dir)}
    except BackdoorlabError as e:
        measured = {"status": "failed", "error": str(e)}
    except Exception as e:  # noqa: BLE001 - a cell's own bug is reported with the cell, the grid goes on
        measured = {"status": "failed", "error": f"{type(e).__name__}: {' '.join(str(e).split())}"}
    result = {**measured, "key": key, "kind": kind, "recipe": recipe, "seconds": round(time.time() - tick, 1),
              "machine": machine()}
    atomic_write_json(work / RESULT, result)
    if final.exists():  # an earlier failed (or concurrent) run: this one's folder replaces it
        shutil.rmtree(final, ignore_errors=True)
    try:
        os.rename(work, final)
    except OSError:  # another run of the same job got there first: keep its folder
        shutil.rmtree(work, ignore_errors=True)
    return result


def _model(recipe: dict, out: str, work: pathlib.Path, data_dir) -> dict:
    from ..runs import model_attack_run, train_run
    from ..train import TrainConfig
    ds = _dataset(recipe["dataset"], data_dir)
    if recipe["make"] == "attack":
        kwargs = model_attack_options(recipe["attack"], recipe["options"], recipe["seed"], ds)
        summary = model_attack_run(ds, recipe["attack"], str(job_dir(out, "model", recipe["from"])), str(work),
                                   seed=recipe["seed"], progress=False, **kwargs)
        return {"metrics": summary["after"]}
    attack = training_attack(recipe["attack"], recipe["options"], ds) if recipe["attack"] else None
    _, meta = train_run(ds, recipe["arch"], TrainConfig(**recipe["train"]), attack, out=str(work), progress=False,
                        desc=recipe["attack"] or "clean")
    return {"metrics": meta["metrics"]}


def _score_backdoor(score: dict | None, ds, seed: int = 0):
    """The backdoor a clean row is measured against (None: the one its checkpoint records)."""
    if score is None:
        return None
    if score["kind"] == "model":
        return model_attack_options(score["attack"], score["options"], seed, ds).get("backdoor")
    return training_attack(score["attack"], score["options"], ds).backdoor


def _model_dir(out, key: str) -> str:
    return str(job_dir(out, "model", key))


def _model_and_dataset(out, key: str, data_dir) -> tuple[str, object]:
    """A made model's folder and the data set its sidecar names (loaded once per worker)."""
    from ..models.checkpoint import read_meta
    model_dir = _model_dir(out, key)
    return model_dir, _dataset(read_meta(model_dir)["dataset"], data_dir)


def _suspect(recipe: dict, out: str, work: pathlib.Path, data_dir) -> dict:
    from ..attacks import backdoor_of
    from ..metrics import evaluate
    from ..models import load_for
    model_dir, ds = _model_and_dataset(out, recipe["model"], data_dir)
    model, meta = load_for(model_dir, ds)
    backdoor = _score_backdoor(recipe["score_with"], ds) or backdoor_of(meta)
    m = evaluate(model, ds.test_x, ds.test_y, backdoor, ds.num_classes)
    return {"metrics": {k: v for k, v in m.items() if k != "n_test"}}


def _defense(recipe: dict, out: str, work: pathlib.Path, data_dir) -> dict:
    from ..runs import repair_run
    first, ds = _model_and_dataset(out, recipe["models"][0], data_dir)
    dirs = [first, *(_model_dir(out, k) for k in recipe["models"][1:])]
    backdoor = _score_backdoor(recipe["score_with"], ds)
    report = repair_run(ds, recipe["defense"], dirs, recipe["budget"], str(work / "repaired"), recipe["options"],
                        backdoor=backdoor, budget_seed=recipe["budget_seed"], progress=False)
    result = {"before": report["before"][0], "after": report["after"], "defense_seconds": report["seconds"]}
    if "summary" in report:  # the sanitizer: where on the path it chose, and its warnings
        result["info"] = {k: report["summary"].get(k) for k in ("t", "ensemble", "verdict", "warnings")}
    if recipe["retune"] is not None:
        from ..defenses.retune import RetuneConfig
        from ..runs import retune_run
        r = retune_run(ds, str(work / "repaired"), str(work / "retuned"), backdoor=backdoor,
                       cfg=RetuneConfig(**recipe["retune"]), progress=False)
        result["post_retune"] = {"clean_accuracy": r["post_retune_clean_accuracy"],
                                 "attack_success_rate": r["post_retune_attack_success_rate"]}
    return result


def _detector(recipe: dict, out: str, work: pathlib.Path, data_dir) -> dict:
    model_dir, ds = _model_and_dataset(out, recipe["model"], data_dir)
    if recipe["detector"] == "scan":
        from ..runs import scan_run
        r = scan_run(ds, model_dir, recipe["budget"], str(work / "scan"), recipe["budget_seed"], progress=False,
                     **recipe["options"])
        target = r["suspected_target"]
        detail = (f"label {target} flagged, anomaly index {r['anomaly_index']:.2f}" if r["backdoored"] else
                  f"nothing flagged, largest anomaly index {r['anomaly_index']:.2f}")
        return {"flagged": bool(r["backdoored"]), "detail": detail,
                "detection": {k: r[k] for k in ("suspected_target", "anomaly_index", "flagged_labels")}}
    from ..runs import detect_poison_run
    r = detect_poison_run(ds, model_dir, recipe["detector"], recipe["budget"], recipe["budget_seed"],
                          out=str(work / "detection"), progress=False, **recipe["options"])
    detail = f"{r['flagged']} of {r['training_images']} training images flagged"
    if r.get("recall") is not None:  # the sidecar records which images were poisoned
        precision = "-" if r.get("precision") is None else f"{100 * r['precision']:.2f}%"
        detail += f"; precision {precision}, recall {100 * r['recall']:.2f}%"
    if r.get("warnings"):
        detail += f"; {len(r['warnings'])} warning(s): {r['warnings'][0]}"
    return {"flagged": r["flagged"] > 0, "detail": detail,
            "detection": {k: r.get(k) for k in ("flagged", "precision", "recall", "auc", "warnings")}}


JOBS = {"model": _model, "suspect": _suspect, "defense": _defense, "detector": _detector}
