"""results.md: per data set and architecture, the table of the project's docs (rows = attack and seed,
columns = "none" then each defense, cells "CA / ASR" in %), and a table of the detectors' verdicts."""

from __future__ import annotations

from .report_format import (budget_text, ca_asr_text, defense_labels, escape_md, first_seen, flagged_text, is_ok,
                            is_pending, status_counts, wall_text)


def _groups(rows: list[dict]) -> dict[tuple, list[dict]]:
    """The rows by (data set, architecture), both in first-seen order."""
    groups: dict[tuple, list[dict]] = {}
    for r in rows:
        groups.setdefault((r.get("dataset"), r.get("arch")), []).append(r)
    return groups


def _join(texts: list[str]) -> str:
    """Several cells for one table slot (should not happen in a grid) are all shown rather than one hidden."""
    return "; ".join(texts)


def _comparison_table(rows: list[dict]) -> list[str]:
    """The Markdown lines of one data set's table: rows = (attack, seed), columns = "none" then each defense in
    first-seen order, cells "CA / ASR" (", N s" for defenses), "failed", or "not run"; then a list of the
    failed cells' errors."""
    labels = defense_labels(rows)
    table_rows = [r for r in rows if r.get("kind") in ("suspect", "defense")]
    columns = ["none"] + first_seen(labels[r["cell"]] for r in table_rows if r.get("kind") == "defense")
    keys = first_seen((r.get("attack"), r.get("seed")) for r in table_rows)
    slots: dict[tuple, list[str]] = {}
    for r in table_rows:
        column = "none" if r.get("kind") == "suspect" else labels[r["cell"]]
        slots.setdefault((r.get("attack"), r.get("seed"), column), []).append(
            ca_asr_text(r, with_time=r.get("kind") == "defense"))
    lines = ["| attack | seed | " + " | ".join(escape_md(c) for c in columns) + " |",
             "| --- | --- | " + " | ".join("---" for _ in columns) + " |"]
    for attack, seed in keys:
        cells = [_join(slots.get((attack, seed, c), ["not run"])) for c in columns]
        lines.append(f"| {escape_md(attack)} | {escape_md(seed)} | " + " | ".join(escape_md(c) for c in cells) + " |")
    failed = [r for r in table_rows if not is_ok(r) and not is_pending(r)]
    if failed:
        lines.append("")
        lines.append("Failed cells:")
        lines.append("")
        for r in failed:
            column = "none" if r.get("kind") == "suspect" else labels[r["cell"]]
            lines.append(f"- {escape_md(r.get('attack'))}, seed {escape_md(r.get('seed'))}, {escape_md(column)} "
                         f"(cell `{r['cell']}`): {escape_md(r.get('error') or 'no error recorded')}")
    return lines


def _detector_table(rows: list[dict]) -> list[str]:
    """The Markdown lines of the detectors' table: one line per detector row, its verdict and detail."""
    lines = ["| data set | arch | attack | seed | detector | flagged | detail |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        flagged = flagged_text(r.get("flagged")) if is_ok(r) else str(r.get("status"))
        detail = r.get("detail") if is_ok(r) else r.get("error")
        lines.append(f"| {escape_md(r.get('dataset'))} | {escape_md(r.get('arch'))} | {escape_md(r.get('attack'))} | "
                     f"{escape_md(r.get('seed'))} | {escape_md(r.get('defense'))} | {flagged} | "
                     f"{escape_md(detail or '-')} |")
    return lines


def results_markdown(rows: list[dict], sweep: dict) -> str:
    """The text of results.md: a header (machine, clean budgets, command, wall time), one table per
    (data set, architecture) in the style of docs/results.md, and a table of the detectors' verdicts."""
    machines = first_seen(r.get("machine") for r in rows if r.get("machine"))
    lines = [f"# Sweep {escape_md(sweep.get('name'))}", "",
             f"Machine: {escape_md(sweep.get('machine'))}; clean budget(s): "
             f"{budget_text((r.get('budget') for r in rows), (r.get('budget_seed') for r in rows))}.", ""]
    if machines and machines != [sweep.get("machine")]:
        lines += ["Cells ran on: " + "; ".join(escape_md(m) for m in machines) + ".", ""]
    if sweep.get("complete") is False:
        lines += ["Partial results: the cells marked pending have not run yet (the sweep is still running, or it "
                  "stopped: the same command resumes it).", ""]
    lines += [f"Config `{sweep.get('config')}`; {len(rows)} cells, {status_counts(rows)}; "
              f"wall time {wall_text(sweep)}.", "",
              "```bash", str(sweep.get("command")), "```", ""]
    for (dataset, arch), group in _groups(rows).items():
        if not any(r.get("kind") in ("suspect", "defense") for r in group):
            continue
        budgets = budget_text((r.get("budget") for r in group), (r.get("budget_seed") for r in group))
        what = (f"CA / ASR in %, then the defense's wall time (clean budget: {budgets}):"
                if any(r.get("kind") == "defense" for r in group) else "CA / ASR in % of the suspects (no defense):")
        lines += [f"## {escape_md(dataset)}, {escape_md(arch)}", "", what, ""]
        lines += _comparison_table(group)
        lines.append("")
    detectors = [r for r in rows if r.get("kind") == "detector"]
    if detectors:
        lines += ["## Detectors", ""] + _detector_table(detectors) + [""]
    return "\n".join(lines)
