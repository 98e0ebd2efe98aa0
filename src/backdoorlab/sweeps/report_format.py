"""How one number or label of a sweep's results reads: shared by the tables, the pages and the figures
of :mod:`.report`, so that they agree."""

from __future__ import annotations

import html
import math
import re
from typing import Any, Iterable

#: The metrics of a row that are fractions in [0, 1], with how the pages name them (shown in %).
FRACTION_METRICS = (("clean_accuracy", "clean accuracy (CA)"), ("attack_success_rate", "attack success rate (ASR)"),
                    ("robust_accuracy", "robust accuracy (RA)"), ("suspect_clean_accuracy", "suspect's CA"),
                    ("suspect_attack_success_rate", "suspect's ASR"), ("ca_drop", "CA drop (points)"),
                    ("der", "DER (defense effectiveness rating)"), ("post_retune_asr", "ASR after retuning"))





def is_ok(row: dict) -> bool:
    """Whether the cell ran to the end (status "ok"); failed and pending cells have no metrics to show."""
    return row.get("status") == "ok"


def is_pending(row: dict) -> bool:
    """Whether the cell has not run yet (the results of a sweep still running, or stopped)."""
    return row.get("status") == "pending"


def status_counts(rows: list[dict]) -> str:
    """"6 ok, 1 failed" (and ", 3 pending" while a sweep runs)."""
    ok = sum(1 for r in rows if is_ok(r))
    pending = sum(1 for r in rows if is_pending(r))
    return f"{ok} ok, {len(rows) - ok - pending} failed" + (f", {pending} pending" if pending else "")


def number(x: Any) -> float | None:
    """``x`` as a finite float, or None (None, NaN, infinities, non-numbers): what the tables treat as blank."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def pct(x: Any, digits: int = 2) -> str:
    """A fraction as a percent with ``digits`` decimals ("97.99"); "-" when unknown."""
    x = number(x)
    return "-" if x is None else f"{100 * x:.{digits}f}"


def seconds_text(s: Any) -> str:
    """A wall time as the docs write it: whole seconds with thousands separators ("2,298 s"); "-" if unknown."""
    s = number(s)
    return "-" if s is None else f"{round(s):,} s"


def duration_text(s: Any) -> str:
    """A long wall time for a header: "4,321 s (1 h 12 min)"; short ones stay in seconds."""
    s = number(s)
    if s is None:
        return "-"
    text = f"{s:,.0f} s"
    if s >= 3600:
        text += f" ({int(s // 3600)} h {int(s % 3600 // 60)} min)"
    elif s >= 60:
        text += f" ({int(s // 60)} min {int(s % 60)} s)"
    return text


def wall_text(sweep: dict) -> str:
    """The sweep's wall time for a header; for a resumed sweep, that it is this run's and how many jobs an
    earlier run had made."""
    text = duration_text(sweep.get("wall_seconds"))
    before = sweep.get("jobs_made_before")
    if before:
        text += f" (this run; {before} of {sweep.get('jobs')} jobs were made by an earlier run it resumed)"
    return text


def ca_asr_text(row: dict, with_time: bool = False) -> str:
    """A row's Markdown table cell: "CA / ASR" in % ("97.99 / 0.29"), with ", 369 s" for a defense when
    ``with_time``; "failed" or "pending" for a cell without results. An unknown ASR (or CA) reads "-"."""
    if not is_ok(row):
        return "pending" if is_pending(row) else "failed"
    text = f"{pct(row.get('clean_accuracy'))} / {pct(row.get('attack_success_rate'))}"
    if with_time and number(row.get("seconds")) is not None:
        text += f", {seconds_text(row.get('seconds'))}"
    return text


def flagged_text(x: Any) -> str:
    """A detector's verdict: "yes", "no", or "-" when it gave none."""
    return "-" if x is None else ("yes" if x else "no")


def budget_text(budgets: Iterable[Any], seeds: Iterable[Any]) -> str:
    """The clean budgets of some rows: "1,000 images (budget seeds 0, 1)", or "none" when none used one."""
    bs = sorted({b for b in budgets if b is not None})
    ss = sorted({s for s in seeds if s is not None})
    if not bs:
        return "none"
    text = " and ".join(f"{b:,}" for b in bs) + " images"
    if ss:
        text += f" (budget seed{'s' if len(ss) > 1 else ''} {', '.join(str(s) for s in ss)})"
    return text


def defense_labels(rows: list[dict]) -> dict[str, str]:
    """For the defense rows among ``rows``, the label of their column, by cell id: the defense's label, with
    ", budget N" and ", budget seed S" added only where those vary among ``rows`` (so a sweep with one budget
    keeps plain labels, and one over several budgets does not average them together)."""
    defenses = [r for r in rows if r.get("kind") == "defense"]
    many_budgets = len({r.get("budget") for r in defenses}) > 1
    many_seeds = len({r.get("budget_seed") for r in defenses}) > 1
    labels = {}
    for r in defenses:
        label = str(r.get("defense"))
        if many_budgets:
            label += f", budget {r.get('budget')}"
        if many_seeds:
            label += f", budget seed {r.get('budget_seed')}"
        labels[r["cell"]] = label
    return labels


def safe_name(name: Any) -> str:
    """A data set's name made safe as a file name (letters, digits, '.', '_', '-'), for ``figures/<name>.png``."""
    return re.sub(r"[^A-Za-z0-9._-]", "_", str(name)).lstrip(".") or "_"


def first_seen(values: Iterable[Any]) -> list:
    """The distinct values in the order they first appear (grid order is the order people configured)."""
    return list(dict.fromkeys(values))


def escape_html(x: Any) -> str:
    """HTML-escaped text ("" for None)."""
    return "" if x is None else html.escape(str(x), quote=True)


def escape_md(x: Any) -> str:
    """Text safe inside a Markdown table cell or list (pipes and "<" escaped, newlines flattened)."""
    return str(x).replace("|", "\\|").replace("<", "\\<").replace("\n", " ")
