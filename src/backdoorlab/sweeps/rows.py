"""One row of a sweep's results per cell: its place in the grid, what it measured, and the numbers people compare
defenses by (CA drop, and BackdoorBench's defense effectiveness rating)."""

from __future__ import annotations

from .cells import CELLS


def defense_effectiveness(before: dict, after: dict) -> float | None:
    """BackdoorBench's defense effectiveness rating (Wu et al., NeurIPS 2022 Datasets and Benchmarks),
    ``(max(0, ASR drop) - max(0, CA drop) + 1) / 2`` in [0, 1]: 1 removes the whole backdoor at no cost, 0.5 does
    nothing. None without an ASR."""
    if before.get("attack_success_rate") is None or after.get("attack_success_rate") is None:
        return None
    asr_drop = before["attack_success_rate"] - after["attack_success_rate"]
    ca_drop = before["clean_accuracy"] - after["clean_accuracy"]
    return (max(0.0, asr_drop) - max(0.0, ca_drop) + 1) / 2


PENDING = {"status": "pending", "error": None}  # the result of a cell that has not run yet


def result_row(job, result: dict) -> dict:
    """The results-table row of cell ``job`` from its ``result`` (see :mod:`.cells`; :data:`PENDING` for a cell
    that has not run yet)."""
    row = {"cell": job.key, "kind": job.kind, **job.labels, "status": result["status"], "error": result.get("error"),
           "clean_accuracy": None, "attack_success_rate": None, "robust_accuracy": None,
           "suspect_clean_accuracy": None, "suspect_attack_success_rate": None, "ca_drop": None, "der": None,
           "post_retune_asr": None, "flagged": None, "detail": None, "seconds": result.get("seconds"),
           "machine": result.get("machine"), "recipe": job.recipe, "report": f"{CELLS}/{job.key}/"}
    if result["status"] != "ok":
        return row
    if job.kind == "suspect":
        m = result["metrics"]
        row.update(clean_accuracy=m["clean_accuracy"], attack_success_rate=m.get("attack_success_rate"),
                   robust_accuracy=m.get("robust_accuracy"), suspect_clean_accuracy=m["clean_accuracy"],
                   suspect_attack_success_rate=m.get("attack_success_rate"))
    elif job.kind == "defense":
        before, after = result["before"], result["after"]
        row.update(clean_accuracy=after["clean_accuracy"], attack_success_rate=after.get("attack_success_rate"),
                   robust_accuracy=after.get("robust_accuracy"), suspect_clean_accuracy=before["clean_accuracy"],
                   suspect_attack_success_rate=before.get("attack_success_rate"),
                   ca_drop=before["clean_accuracy"] - after["clean_accuracy"],
                   der=defense_effectiveness(before, after),
                   post_retune_asr=(result.get("post_retune") or {}).get("attack_success_rate"))
        if result.get("info"):
            row["info"] = result["info"]
    else:
        row.update(flagged=result["flagged"], detail=result["detail"], detection=result.get("detection"))
    return row
