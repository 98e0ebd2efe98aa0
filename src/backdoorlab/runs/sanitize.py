"""``backdoorlab sanitize``: the mode-connectivity repair run, and what it writes besides the model.

:func:`sanitize_run` is :func:`~.repair.repair_run` with the ``mode-connectivity`` defense (``backdoorlab
sanitize`` and ``backdoorlab repair mode-connectivity`` are one run with the same options). A defense that
traces a path in weight space gets from this module its ``path.json`` summary (endpoints, choice, rule, verdict,
warnings, the path), ``path.png``, ``curve.safetensors`` (the trained control points) and, with one suspect
and a scratch-trained second endpoint, that endpoint in ``second-endpoint/``, reusable on the same budget.
"""

from __future__ import annotations

import pathlib

import safetensors.torch

from ..errors import BackdoorlabError
from ..io import atomic_path, atomic_write_json
from ..metrics import evaluate
from ..models import load_for, save_checkpoint
from ..models.sidecar import SECOND_ENDPOINT_ORDER, build_sidecar, provenance
from ..report import plot_path, plot_stages

SECOND_ENDPOINT_DIR = "second-endpoint"


def sanitize_run(dataset, model_dirs: list[str], budget_size: int, out: str, cfg, backdoor=None,
                 budget_seed: int = 0, progress: bool = True, reuse_second_endpoint: str | None = None,
                 arch: str | None = None) -> dict:
    """Sanitize one or two suspect checkpoints with the sanitizer configured by ``cfg`` (a
    :class:`~backdoorlab.defenses.SanitizerConfig`); write the model, path.json, path.png, curve and config to
    ``out``; return the path summary (what ``path.json`` holds).

    With one suspect the second endpoint the sanitizer makes is saved too (``out/second-endpoint``);
    ``reuse_second_endpoint`` (such a directory, or the run directory holding it) skips training it again when
    it was made for the same budget and recipe (checked; scratch-trained endpoints only)."""
    from .repair import repair_run

    report = repair_run(dataset, "mode-connectivity", model_dirs, budget_size, out, options=cfg.to_dict(),
                        backdoor=backdoor, budget_seed=budget_seed, progress=progress,
                        reuse_second_endpoint=reuse_second_endpoint, command="sanitize", arch=arch)
    return report["summary"]


def second_endpoint_record(meta: dict, dataset_name: str, budget_size: int, budget_seed: int, holdout: int,
                           cfg) -> dict:
    """Everything a scratch-trained second endpoint depends on: the architecture, the budget (which images, how
    they are split) and the training recipe, not the suspect. Saved with the endpoint, compared on reuse."""
    return {"method": cfg.second_endpoint, "dataset": dataset_name, "arch": meta["arch"],
            "arch_args": meta.get("arch_args") or {}, "clean_budget": budget_size, "budget_seed": budget_seed,
            "holdout": holdout, "val_fraction": cfg.val_fraction, "min_val": cfg.min_val, "steps": cfg.second_steps,
            "lr": cfg.second_lr, "weight_decay": cfg.weight_decay, "batch_size": cfg.batch_size,
            "augment": cfg.augment, "seed": cfg.seed}


def load_second_endpoint(path: str, dataset, record: dict, arch: str | None = None):
    """Load a second endpoint saved by an earlier sanitize run (its ``second-endpoint`` directory, or the run's
    directory holding it) and check it was made for ``record``'s budget and recipe."""
    d = pathlib.Path(path)
    if (d / SECOND_ENDPOINT_DIR / "model.json").exists():  # the sanitize run's directory
        d = d / SECOND_ENDPOINT_DIR
    model, meta = load_for(str(d), dataset, arch)
    saved = provenance(meta).get("second_endpoint")
    if saved is None:
        raise BackdoorlabError(f"{d} is not a second endpoint saved by sanitize (no provenance.second_endpoint "
                               f"record in its model.json)")
    diff = sorted(k for k in set(saved) | set(record) if saved.get(k) != record.get(k))
    if diff:
        raise BackdoorlabError(f"second endpoint {d} was made for another budget or recipe: " + ", ".join(
            f"{k} {saved.get(k)!r} there, {record.get(k)!r} here" for k in diff))
    return model


def evaluate_second_endpoint(second_model, info: dict, dataset, backdoor) -> dict | None:
    """The test metrics of the second endpoint the sanitizer made (one suspect), with ``made_by``; else None."""
    if info.get("second_endpoint") is None:
        return None
    metrics = evaluate(second_model, dataset.test_x, dataset.test_y, backdoor, dataset.num_classes)
    return metrics | {"made_by": info["second_endpoint"]}


def refined_steps(info: dict, cfg) -> int:
    return cfg.refine_steps if info["refined"] else 0


def summary(info: dict, cfg, before: list[dict], second: dict | None, final: dict, n_suspects: int,
            reused: str | None) -> dict:
    """What ``path.json`` holds: the exported choice and its test metrics, the endpoints', the rule in words, the
    verdict and warnings, the refine step's check, the path (and stages) with their timings."""
    endpoints = before + ([second] if second is not None else [])
    return {"t": info["t"], "ensemble": info["ensemble"], "clean_accuracy": final["clean_accuracy"],
            "attack_success_rate": final.get("attack_success_rate"), "robust_accuracy": final.get("robust_accuracy"),
            "endpoints": [{k: e.get(k) for k in ("clean_accuracy", "attack_success_rate", "robust_accuracy",
                                                 "made_by") if k in e} for e in endpoints],
            "curve": cfg.curve, "rule": rule_text(cfg, two_suspects=n_suspects == 2),
            "verdict": info["verdict"], "warnings": sanitize_warnings(info["verdict"], cfg),
            "refined_steps": refined_steps(info, cfg), "refine_check": info["refine_check"],
            "reused_second_endpoint": str(reused) if reused is not None else None,
            "unit_groups": info["unit_groups"], "seconds": info["seconds"], "path": info["path"],
            "stages": info["stages"]}


def sanitized_record(info: dict, cfg, model_dirs: list[str], budget_size: int) -> dict:
    """The ``sanitized`` entry of the exported model's provenance."""
    return {"method": "mode-connectivity", "from": [str(p) for p in model_dirs], "t": info["t"],
            "ensemble": info["ensemble"], "curve": cfg.curve, "clean_budget": budget_size,
            "second_endpoint": info["second_endpoint"], "refined_steps": refined_steps(info, cfg),
            "refine_check": info["refine_check"]}


def write(out_dir: pathlib.Path, summary_: dict, artifacts: dict, cfg, record: dict, second: dict | None,
          inherited: dict, *, title: str, arch: str, args: dict, dataset_name: str) -> None:
    """Write the second endpoint (scratch only: reusable on the same budget), ``curve.safetensors``,
    ``path.json`` and ``path.png`` to ``out_dir``."""
    second_model = artifacts.get("second_model")
    if second_model is not None and cfg.second_endpoint == "scratch":
        save_checkpoint(second_model, out_dir / SECOND_ENDPOINT_DIR,
                        build_sidecar(arch, args, dataset_name, **inherited, seed=cfg.seed,
                                      provenance={"second_endpoint": record},
                                      metrics={k: v for k, v in second.items() if k != "made_by"},
                                      order=SECOND_ENDPOINT_ORDER))
    with atomic_path(out_dir / "curve.safetensors") as tmp:
        safetensors.torch.save_file(artifacts["curve_control"], str(tmp), metadata={"curve": cfg.curve})
    atomic_write_json(out_dir / "path.json", summary_)
    final = {"clean_accuracy": summary_["clean_accuracy"], "attack_success_rate": summary_["attack_success_rate"]}
    exported = final if summary_["refined_steps"] or summary_["ensemble"] else None
    if summary_["stages"]:
        plot_stages(summary_["stages"], out_dir / "path.png", exported=exported, title=title)
    else:
        plot_path(summary_["path"], summary_["t"], out_dir / "path.png", ensemble=summary_["ensemble"],
                  exported=exported, title=title, one_suspect=second is not None)


def rule_text(cfg, two_suspects: bool) -> str:
    """The sanitizer's rule for t, in words, as its configuration sets it."""
    text = (f"farthest t from the suspect endpoint(s) among those at least {cfg.min_distance:.2f} from every suspect "
            f"end, with validation accuracy within {cfg.ca_tolerance:.3f} of the best of them (a warning when that "
            "best is more than the tolerance under the best on the path)")
    if cfg.verify:
        text += ("; then one grid step further from the suspect(s) while Neural Cleanse still finds the suspect's "
                 f"target on the chosen model (anomaly index above {cfg.verify_threshold:g} among the suspect's labels)")
    if cfg.ensemble and (two_suspects or (cfg.second_endpoint == "permuted" and cfg.stages == 1)):
        text += "; with two such t, the mean of both models' softmax outputs"
    if cfg.second_endpoint == "permuted" and cfg.stages == 2 and not two_suspects:
        text += "; applied to the suspect-to-permuted-copy curve, then to the aligned-suspect-to-that-point curve"
    return text


def sanitize_warnings(verdict: dict, cfg) -> list[str]:
    """One line per way the exported model falls short of what the sanitizer promises: outside the accuracy
    tolerance (to keep its distance from the suspects, or to leave the backdoor behind), or still carrying the
    backdoor by Neural Cleanse's check. Empty when it does not."""
    warnings = []
    if verdict.get("backdoor_check") is False:
        last = verdict["check"]["checks"][-1]
        found = ", ".join(f"label {k}: anomaly index {v:.2f}" for k, v in last["anomaly_index"].items())
        warnings.append(f"the backdoor may remain: Neural Cleanse still finds the suspect's target on every point "
                        f"checked, up to {last['model']} ({found}; threshold {cfg.verify_threshold:g})")
    if not verdict.get("within_tolerance", True):
        warnings.append(f"the exported model costs more than the accuracy tolerance ({cfg.ca_tolerance:.1%} under the "
                        f"best validation accuracy on the path): {verdict.get('note', '')}")
    return warnings
