"""The results of an attack x defense sweep, written for people to read.

:func:`write_results` turns the sweep's rows (one dict per grid cell, in grid order) into:

- ``results.json``: the sweep and the rows as given, with sorted keys, so identical inputs give identical bytes;
- ``results.csv``: one flat line per cell (the recipe as compact JSON), for spreadsheets and pandas;
- ``results.md``: per data set and architecture, the table of the project's docs (rows = attack and seed,
  columns = "none" then each defense, cells "CA / ASR" in %), and a table of the detectors' verdicts;
- ``figures/<dataset>.png``: per data set, the defenses' CA drop against the ASR left after them;
- ``cells/<cell>/index.html``: one page per cell (every row: failed cells get one too, with their error),
  with its recipe, metrics and links to the files in its folder;
- ``index.html``: one self-contained page (inline CSS and JS, nothing fetched from elsewhere) with a sortable
  table of all rows and the figures.

Every file is written atomically (a temporary file next to it, then ``os.replace``), so a reader never sees a
half-written page, and rewriting the results after each cell is safe.
"""

from __future__ import annotations

import csv
import html
import io
import json
import math
import os
import pathlib
import re
from typing import Any, Iterable
from urllib.parse import quote

from ..io import atomic_path, atomic_write_text

#: The columns of ``results.csv``, in order.
CSV_COLUMNS = ("cell", "kind", "dataset", "arch", "seed", "attack", "defense", "budget", "budget_seed", "status",
               "clean_accuracy", "attack_success_rate", "robust_accuracy", "suspect_clean_accuracy",
               "suspect_attack_success_rate", "ca_drop", "der", "post_retune_asr", "flagged", "detail", "seconds",
               "machine", "error", "report", "recipe")

#: The metrics of a row that are fractions in [0, 1], with how the pages name them (shown in %).
FRACTION_METRICS = (("clean_accuracy", "clean accuracy (CA)"), ("attack_success_rate", "attack success rate (ASR)"),
                    ("robust_accuracy", "robust accuracy (RA)"), ("suspect_clean_accuracy", "suspect's CA"),
                    ("suspect_attack_success_rate", "suspect's ASR"), ("ca_drop", "CA drop (points)"),
                    ("der", "DER (defense effectiveness rating)"), ("post_retune_asr", "ASR after retuning"))

_CELL_ID = re.compile(r"[0-9a-f]{16}")
_MARKERS = "osD^v<>pP*Xh"

# ---------------------------------------------------------------------------------------------------------------
# Small helpers: how one number or label reads. Kept apart so the tables, pages and figures agree.


def is_ok(row: dict) -> bool:
    """Whether the cell ran to the end (status "ok"); failed and pending cells have no metrics to show."""
    return row.get("status") == "ok"


def is_pending(row: dict) -> bool:
    """Whether the cell has not run yet (the results of a sweep still running)."""
    return row.get("status") == "pending"


def status_counts(rows: list[dict]) -> str:
    """"6 ok, 1 failed" (and ", 3 pending" while a sweep runs)."""
    ok = sum(1 for r in rows if is_ok(r))
    pending = sum(1 for r in rows if is_pending(r))
    return f"{ok} ok, {len(rows) - ok - pending} failed" + (f", {pending} pending" if pending else "")


def _number(x: Any) -> float | None:
    """``x`` as a finite float, or None (None, NaN, infinities, non-numbers): what the tables treat as blank."""
    if isinstance(x, bool) or not isinstance(x, (int, float)):
        return None
    x = float(x)
    return x if math.isfinite(x) else None


def pct(x: Any, digits: int = 2) -> str:
    """A fraction as a percent with ``digits`` decimals ("97.99"); "-" when unknown."""
    x = _number(x)
    return "-" if x is None else f"{100 * x:.{digits}f}"


def seconds_text(s: Any) -> str:
    """A wall time as the docs write it: whole seconds with thousands separators ("2,298 s"); "-" if unknown."""
    s = _number(s)
    return "-" if s is None else f"{round(s):,} s"


def duration_text(s: Any) -> str:
    """A long wall time for a header: "4,321 s (1 h 12 min)"; short ones stay in seconds."""
    s = _number(s)
    if s is None:
        return "-"
    text = f"{s:,.0f} s"
    if s >= 3600:
        text += f" ({int(s // 3600)} h {int(s % 3600 // 60)} min)"
    elif s >= 60:
        text += f" ({int(s // 60)} min {int(s % 60)} s)"
    return text


def ca_asr_text(row: dict, with_time: bool = False) -> str:
    """A row's Markdown table cell: "CA / ASR" in % ("97.99 / 0.29"), with ", 369 s" for a defense when
    ``with_time``; "failed" or "pending" for a cell without results. An unknown ASR (or CA) reads "-"."""
    if not is_ok(row):
        return "pending" if is_pending(row) else "failed"
    text = f"{pct(row.get('clean_accuracy'))} / {pct(row.get('attack_success_rate'))}"
    if with_time and _number(row.get("seconds")) is not None:
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


def _first_seen(values: Iterable[Any]) -> list:
    """The distinct values in the order they first appear (grid order is the order people configured)."""
    return list(dict.fromkeys(values))


def _e(x: Any) -> str:
    """HTML-escaped text ("" for None)."""
    return "" if x is None else html.escape(str(x), quote=True)


def _md(x: Any) -> str:
    """Text safe inside a Markdown table cell or list (pipes and "<" escaped, newlines flattened)."""
    return str(x).replace("|", "\\|").replace("<", "\\<").replace("\n", " ")


# ---------------------------------------------------------------------------------------------------------------
# The entry point.


def write_results(out_dir: str | os.PathLike, rows: list[dict], sweep: dict) -> None:
    """Write the sweep's results under ``out_dir`` (which must exist): results.json, results.csv, results.md,
    figures/<dataset>.png, cells/<cell>/index.html for every row that ran, and index.html. See the module's docstring.

    ``rows``: one dict per grid cell, in grid order (keys as the sweep engine fills them; missing keys read as
    None). ``sweep``: at least ``name``, ``config``, ``command``, ``machine`` and ``wall_seconds``. Raises
    ValueError when a row's ``cell`` is not 16 lowercase hex characters or appears twice (it names a folder)."""
    out = pathlib.Path(out_dir)
    seen: set[str] = set()
    for r in rows:
        cell = r.get("cell")
        if not isinstance(cell, str) or not _CELL_ID.fullmatch(cell):
            raise ValueError(f"row has no valid cell id (16 lowercase hex characters): {cell!r}")
        if cell in seen:
            raise ValueError(f"cell {cell} appears twice among the rows")
        seen.add(cell)

    atomic_write_text(out / "results.json", results_json(rows, sweep))
    atomic_write_text(out / "results.csv", results_csv(rows))
    atomic_write_text(out / "results.md", results_markdown(rows, sweep))
    figures = write_figures(out / "figures", rows)
    for r in rows:
        if is_pending(r):  # its folder is the job's to make (renamed into place when it is done)
            continue
        folder = out / "cells" / r["cell"]
        folder.mkdir(parents=True, exist_ok=True)
        atomic_write_text(folder / "index.html", cell_page(r, _folder_files(folder)))
    atomic_write_text(out / "index.html", index_page(rows, sweep, figures))


# ---------------------------------------------------------------------------------------------------------------
# results.json and results.csv


def results_json(rows: list[dict], sweep: dict) -> str:
    """The text of results.json: ``{"sweep": sweep, "rows": rows}``, indent 1, sorted keys, a final newline."""
    return json.dumps({"sweep": sweep, "rows": rows}, indent=1, sort_keys=True) + "\n"


def _csv_value(key: str, value: Any) -> Any:
    """One CSV field: blank for None, "true"/"false" for booleans, the recipe as compact JSON with sorted keys."""
    if key == "recipe":
        return "" if value is None else json.dumps(value, sort_keys=True, separators=(",", ":"))
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return value


def results_csv(rows: list[dict]) -> str:
    """The text of results.csv: a header of :data:`CSV_COLUMNS`, then one line per row ("\\n" line ends)."""
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(CSV_COLUMNS)
    for r in rows:
        writer.writerow([_csv_value(k, r.get(k)) for k in CSV_COLUMNS])
    return buf.getvalue()


# ---------------------------------------------------------------------------------------------------------------
# results.md


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
    columns = ["none"] + _first_seen(labels[r["cell"]] for r in table_rows if r.get("kind") == "defense")
    keys = _first_seen((r.get("attack"), r.get("seed")) for r in table_rows)
    slots: dict[tuple, list[str]] = {}
    for r in table_rows:
        column = "none" if r.get("kind") == "suspect" else labels[r["cell"]]
        slots.setdefault((r.get("attack"), r.get("seed"), column), []).append(
            ca_asr_text(r, with_time=r.get("kind") == "defense"))
    lines = ["| attack | seed | " + " | ".join(_md(c) for c in columns) + " |",
             "| --- | --- | " + " | ".join("---" for _ in columns) + " |"]
    for attack, seed in keys:
        cells = [_join(slots.get((attack, seed, c), ["not run"])) for c in columns]
        lines.append(f"| {_md(attack)} | {_md(seed)} | " + " | ".join(_md(c) for c in cells) + " |")
    failed = [r for r in table_rows if not is_ok(r) and not is_pending(r)]
    if failed:
        lines.append("")
        lines.append("Failed cells:")
        lines.append("")
        for r in failed:
            column = "none" if r.get("kind") == "suspect" else labels[r["cell"]]
            lines.append(f"- {_md(r.get('attack'))}, seed {_md(r.get('seed'))}, {_md(column)} "
                         f"(cell `{r['cell']}`): {_md(r.get('error') or 'no error recorded')}")
    return lines


def _detector_table(rows: list[dict]) -> list[str]:
    """The Markdown lines of the detectors' table: one line per detector row, its verdict and detail."""
    lines = ["| data set | arch | attack | seed | detector | flagged | detail |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in rows:
        flagged = flagged_text(r.get("flagged")) if is_ok(r) else str(r.get("status"))
        detail = r.get("detail") if is_ok(r) else r.get("error")
        lines.append(f"| {_md(r.get('dataset'))} | {_md(r.get('arch'))} | {_md(r.get('attack'))} | "
                     f"{_md(r.get('seed'))} | {_md(r.get('defense'))} | {flagged} | {_md(detail or '-')} |")
    return lines


def results_markdown(rows: list[dict], sweep: dict) -> str:
    """The text of results.md: a header (machine, clean budgets, command, wall time), one table per
    (data set, architecture) in the style of docs/results.md, and a table of the detectors' verdicts."""
    machines = _first_seen(r.get("machine") for r in rows if r.get("machine"))
    lines = [f"# Sweep {_md(sweep.get('name'))}", "",
             f"Machine: {_md(sweep.get('machine'))}; clean budget(s): "
             f"{budget_text((r.get('budget') for r in rows), (r.get('budget_seed') for r in rows))}.", ""]
    if machines and machines != [sweep.get("machine")]:
        lines += ["Cells ran on: " + "; ".join(_md(m) for m in machines) + ".", ""]
    if sweep.get("complete") is False:
        lines += ["Partial results of a sweep still running.", ""]
    lines += [f"Config `{sweep.get('config')}`; {len(rows)} cells, {status_counts(rows)}; "
              f"wall time {duration_text(sweep.get('wall_seconds'))}.", "",
              "```bash", str(sweep.get("command")), "```", ""]
    for (dataset, arch), group in _groups(rows).items():
        if not any(r.get("kind") in ("suspect", "defense") for r in group):
            continue
        budgets = budget_text((r.get("budget") for r in group), (r.get("budget_seed") for r in group))
        lines += [f"## {_md(dataset)}, {_md(arch)}", "",
                  f"CA / ASR in %, then the defense's wall time (clean budget: {budgets}):", ""]
        lines += _comparison_table(group)
        lines.append("")
    detectors = [r for r in rows if r.get("kind") == "detector"]
    if detectors:
        lines += ["## Detectors", ""] + _detector_table(detectors) + [""]
    return "\n".join(lines)


# ---------------------------------------------------------------------------------------------------------------
# figures


def figure_points(rows: list[dict]) -> list[dict]:
    """The points of one data set's figure: per (defense column, attack), the mean CA drop (points) and mean ASR
    after (%) over the seeds of its ok defense rows that have both numbers. Each point is a dict with
    ``defense``, ``attack``, ``x``, ``y`` and ``n`` (how many rows it averages), in first-seen order. When the
    rows span several architectures the attack's label names the architecture, so they are not averaged."""
    defenses = [r for r in rows if r.get("kind") == "defense" and is_ok(r)]
    labels = defense_labels(defenses)
    many_archs = len({r.get("arch") for r in defenses}) > 1
    sums: dict[tuple, list[float]] = {}
    for r in defenses:
        x, y = _number(r.get("ca_drop")), _number(r.get("attack_success_rate"))
        if x is None or y is None:
            continue
        attack = f"{r.get('attack')} ({r.get('arch')})" if many_archs else str(r.get("attack"))
        acc = sums.setdefault((labels[r["cell"]], attack), [0.0, 0.0, 0])
        acc[0] += 100 * x
        acc[1] += 100 * y
        acc[2] += 1
    return [{"defense": d, "attack": a, "x": sx / n, "y": sy / n, "n": n} for (d, a), (sx, sy, n) in sums.items()]


def write_figure(path: pathlib.Path, dataset: Any, points: list[dict]) -> None:
    """Write one data set's figure (PNG, atomically): CA drop against ASR after, colour per defense, marker per
    attack, with a legend for each. Uses matplotlib's object API (no pyplot), so no global state changes."""
    from matplotlib.figure import Figure
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    defenses = _first_seen(p["defense"] for p in points)
    attacks = _first_seen(p["attack"] for p in points)
    colour = {d: f"C{i % 10}" for i, d in enumerate(defenses)}
    marker = {a: _MARKERS[i % len(_MARKERS)] for i, a in enumerate(attacks)}
    fig = Figure(figsize=(7.2, 4.4), dpi=110)
    ax = fig.add_subplot()
    for p in points:
        ax.scatter([p["x"]], [p["y"]], color=colour[p["defense"]], marker=marker[p["attack"]], s=55,
                   edgecolors="black", linewidths=0.5, zorder=3)
    handles = [Patch(color=colour[d], label=d) for d in defenses]
    handles += [Line2D([], [], ls="", marker=marker[a], color="grey", label=a) for a in attacks]
    ax.legend(handles=handles, fontsize=8, loc="upper left", bbox_to_anchor=(1.02, 1.0), borderaxespad=0,
              title="defense (colour), attack (marker)", title_fontsize=8)
    ax.axvline(0, color="grey", lw=0.6)
    ax.set_ylim(-3, 103)
    ax.set_xlabel("CA drop (points: suspect's CA minus CA after the defense)")
    ax.set_ylabel("ASR after the defense (%)")
    ax.set_title(f"{dataset}: defenses, mean over seeds", fontsize=10)
    ax.grid(alpha=0.3)
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def write_figures(folder: pathlib.Path, rows: list[dict]) -> dict[Any, str]:
    """Write ``figures/<dataset>.png`` for each data set with at least one ok defense row that has a CA drop
    and an ASR; returns {data set: path relative to the results folder} for those written."""
    written: dict[Any, str] = {}
    for dataset in _first_seen(r.get("dataset") for r in rows):
        points = figure_points([r for r in rows if r.get("dataset") == dataset])
        if not points:
            continue
        folder.mkdir(parents=True, exist_ok=True)
        name = f"{safe_name(dataset)}.png"
        write_figure(folder / name, dataset, points)
        written[dataset] = f"{folder.name}/{name}"
    return written


# ---------------------------------------------------------------------------------------------------------------
# HTML pages

_FAVICON = '<link rel="icon" href="data:,">'  # no favicon request (it would 404 and log a console error)

_CSS = """
body { font: 14px/1.4 system-ui, sans-serif; margin: 1.5em; color: #222; }
h1 { font-size: 1.4em; } h2 { font-size: 1.15em; margin-top: 1.6em; }
code, pre { font: 12px/1.35 ui-monospace, monospace; }
pre { background: #f6f6f6; padding: .6em; overflow-x: auto; }
table { border-collapse: collapse; font-size: 13px; }
th, td { border: 1px solid #ccc; padding: 3px 7px; }
td { white-space: nowrap; } td.note, td.error { white-space: normal; min-width: 16em; }
td.num { text-align: right; font-variant-numeric: tabular-nums; }
#results th { background: #eee; cursor: pointer; user-select: none; white-space: nowrap; }
#results th[aria-sort="ascending"]::after { content: " \\25B2"; }
#results th[aria-sort="descending"]::after { content: " \\25BC"; }
tr.failed td { background: #fde8e8; }
tr.failed td.status { color: #b00; font-weight: bold; }
tr.pending td { color: #888; }
dl.meta { display: grid; grid-template-columns: max-content auto; gap: 2px 1em; }
dl.meta dt { font-weight: bold; } dl.meta dd { margin: 0; }
figure { display: inline-block; margin: 1em 1em 0 0; } figcaption { font-size: 12px; color: #555; }
.error { color: #b00; }
"""

# Sorts #results by a clicked header: numbers numerically (from data-value), text case-insensitively, blanks last
# in both directions; a second click on the same header reverses. Equal keys keep their current order.
_SORT_JS = """
(function () {
  "use strict";
  var table = document.getElementById("results");
  var tbody = table.tBodies[0];
  var headers = table.tHead.rows[0].cells;
  var current = -1, direction = 1;
  function key(row, col, numeric) {
    var td = row.cells[col];
    var raw = td.hasAttribute("data-value") ? td.getAttribute("data-value") : td.textContent.trim();
    if (raw === "") { return null; }
    if (numeric) { var x = Number(raw); return isNaN(x) ? null : x; }
    return raw.toLowerCase();
  }
  function sortBy(col) {
    var numeric = headers[col].getAttribute("data-type") === "number";
    direction = (current === col) ? -direction : 1;
    current = col;
    var items = Array.prototype.map.call(tbody.rows, function (row, i) {
      return {row: row, key: key(row, col, numeric), i: i};
    });
    items.sort(function (a, b) {
      if (a.key === null || b.key === null) {
        if (a.key === b.key) { return a.i - b.i; }
        return a.key === null ? 1 : -1;
      }
      var c = numeric ? a.key - b.key : (a.key < b.key ? -1 : (a.key > b.key ? 1 : 0));
      return c !== 0 ? c * direction : a.i - b.i;
    });
    items.forEach(function (item) { tbody.appendChild(item.row); });
    for (var i = 0; i < headers.length; i++) {
      if (i === col) { headers[i].setAttribute("aria-sort", direction > 0 ? "ascending" : "descending"); }
      else { headers[i].removeAttribute("aria-sort"); }
    }
  }
  Array.prototype.forEach.call(headers, function (th, col) {
    th.addEventListener("click", function () { sortBy(col); });
    th.addEventListener("keydown", function (ev) {
      if (ev.key === "Enter" || ev.key === " ") { ev.preventDefault(); sortBy(col); }
    });
  });
})();
"""

#: The columns of index.html's table: (row key, header, kind); "pct" = fraction shown in %, "int"/"float" =
#: number shown as is, "text" = text. CA drop is in points (the fraction times 100), like the figures' x axis.
INDEX_COLUMNS = (("dataset", "dataset", "text"), ("arch", "arch", "text"), ("attack", "attack", "text"),
                 ("seed", "seed", "int"), ("defense", "defense", "text"), ("kind", "kind", "text"),
                 ("budget", "budget", "int"), ("clean_accuracy", "CA %", "pct"),
                 ("attack_success_rate", "ASR %", "pct"), ("ca_drop", "CA drop (points)", "pct"),
                 ("der", "DER %", "pct"), ("robust_accuracy", "RA %", "pct"),
                 ("post_retune_asr", "post-retune ASR %", "pct"), ("seconds", "time (s)", "float"),
                 ("status", "status", "text"), ("note", "error / verdict", "text"), ("report", "report", "text"))


def _page(title: str, body: str, script: str = "") -> str:
    """A complete, self-contained HTML page (inline CSS, optional inline script at the end of the body)."""
    script = f"<script>{script}</script>\n" if script else ""
    return ("<!DOCTYPE html>\n<html lang=\"en\">\n<head>\n<meta charset=\"utf-8\">\n"
            "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">\n"
            f"{_FAVICON}\n<title>{_e(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n{script}"
            "</body>\n</html>\n")


def _url(path: str) -> str:
    """A relative path as an href/src: each part percent-encoded, then HTML-escaped."""
    return _e(quote(path, safe="/"))


def row_note(row: dict) -> str:
    """The "error / verdict" column: a failed cell's error, or a detector's verdict ("flagged: yes; detail")."""
    if is_pending(row):
        return "not run yet"
    if not is_ok(row):
        return str(row.get("error") or "failed (no error recorded)")
    if row.get("kind") == "detector":
        detail = row.get("detail")
        return f"flagged: {flagged_text(row.get('flagged'))}" + (f"; {detail}" if detail else "")
    return ""


def _number_td(value: Any, kind: str, title: str = "") -> str:
    """A numeric table cell: the shown text, and the raw number in data-value (empty when unknown) for sorting."""
    x = _number(value)
    if x is None:
        raw, text = "", "-"
    elif kind == "int":
        raw, text = json.dumps(value), str(value)
    else:
        raw = json.dumps(x)
        text = pct(x) if kind == "pct" else f"{x:,.1f}"
    title = f' title="{_e(title)}"' if title else ""
    return f'<td class="num" data-value="{_e(raw)}"{title}>{_e(text)}</td>'


def _index_row(row: dict) -> str:
    """One <tr> of index.html's table (failed rows get class "failed" and their error as the row's title)."""
    cells = []
    for key, _, kind in INDEX_COLUMNS:
        if kind != "text":
            cells.append(_number_td(row.get(key), kind, row.get("machine") if key == "seconds" else ""))
        elif key == "report":
            cells.append("<td></td>" if is_pending(row) else f'<td><a href="{_url(_cell_page_path(row))}">cell</a></td>')
        elif key == "note":
            note = row_note(row)
            cells.append(f'<td class="{"error" if not is_ok(row) else "note"}">{_e(note)}</td>')
        else:
            value = row.get(key)
            cls = ' class="status"' if key == "status" else ""
            cells.append(f'<td{cls}>{_e("" if value is None else value)}</td>')
    attrs = f' data-cell="{_e(row["cell"])}" data-kind="{_e(row.get("kind"))}"'
    if is_pending(row):
        attrs += ' class="pending"'
    elif not is_ok(row):
        attrs += f' class="failed" title="{_e(row_note(row))}"'
    return f"<tr{attrs}>" + "".join(cells) + "</tr>"


def _cell_page_path(row: dict) -> str:
    """Where a row's own page is, relative to the results folder."""
    return f"cells/{row['cell']}/index.html"


def index_page(rows: list[dict], sweep: dict, figures: dict[Any, str]) -> str:
    """The text of index.html: the sweep's facts, the counts of ok and failed cells, the sortable table of all
    rows (id "results"; each row's data-cell is its cell id, each numeric cell's data-value its raw number) and
    one figure per data set that has one."""
    counts: dict[Any, int] = {}
    for r in rows:
        counts[r.get("kind")] = counts.get(r.get("kind"), 0) + 1
    kinds = ", ".join(f"{n} {k}" for k, n in counts.items())
    meta = [("sweep", sweep.get("name")), ("config", sweep.get("config")), ("command", sweep.get("command")),
            ("machine", sweep.get("machine")), ("wall time", duration_text(sweep.get("wall_seconds"))),
            ("cells", f"{len(rows)} ({kinds}): {status_counts(rows)}")]
    if sweep.get("complete") is False:
        meta.append(("state", "running: partial results, rewritten as cells finish"))
    dl = "".join(f"<dt>{_e(k)}</dt><dd>{'<code>' + _e(v) + '</code>' if k == 'command' else _e(v)}</dd>"
                 for k, v in meta)
    head = "".join(f'<th tabindex="0" scope="col" data-key="{_e(key)}" '
                   f'data-type="{"text" if kind == "text" else "number"}">{_e(label)}</th>'
                   for key, label, kind in INDEX_COLUMNS)
    body_rows = "\n".join(_index_row(r) for r in rows)
    figs = "".join(f'<figure><img src="{_url(path)}" alt="{_e(f"CA drop against ASR after, {dataset}")}">'
                   f"<figcaption>{_e(dataset)}: CA drop (points) against ASR after each defense (%), one point "
                   f"per defense and attack, mean over seeds.</figcaption></figure>\n"
                   for dataset, path in figures.items())
    body = (f"<h1>Sweep results: {_e(sweep.get('name'))}</h1>\n<dl class=\"meta\">{dl}</dl>\n"
            '<p>Also as <a href="results.json">results.json</a>, <a href="results.csv">results.csv</a> and '
            '<a href="results.md">results.md</a>. Click a column header to sort by it (again to reverse).</p>\n'
            f'<table id="results">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body_rows}\n</tbody>\n</table>\n'
            + (f"<h2>Figures</h2>\n{figs}" if figs else "<p>No figures: no defense cell ran to the end.</p>\n"))
    return _page(f"Sweep {sweep.get('name')}", body, _SORT_JS)


def _folder_files(folder: pathlib.Path, limit: int = 500) -> list[str]:
    """The files under a cell's folder (relative, sorted), less its own index.html and temporary files."""
    files = []
    for p in sorted(folder.rglob("*")):
        rel = p.relative_to(folder).as_posix()
        if p.is_file() and rel != "index.html" and not any(part.startswith(".") for part in rel.split("/")):
            files.append(rel)
            if len(files) >= limit:
                break
    return files


def cell_page(row: dict, files: list[str]) -> str:
    """The text of cells/<cell>/index.html: what the cell is, its status (and error), its metrics, links to the
    files in its folder, its recipe as pretty JSON, and a link back to the sweep's index.html."""
    title = (f"{row.get('dataset')}, {row.get('arch')}, {row.get('attack')}, seed {row.get('seed')}, "
             f"{row.get('kind')} {row.get('defense')}")
    facts = [("cell", row["cell"]), ("kind", row.get("kind")), ("status", row.get("status")),
             ("budget", row.get("budget")), ("budget seed", row.get("budget_seed")),
             ("wall time", seconds_text(row.get("seconds"))), ("machine", row.get("machine")),
             ("report folder", row.get("report"))]
    if row.get("kind") == "detector":
        facts += [("flagged", flagged_text(row.get("flagged"))), ("detail", row.get("detail"))]
    dl = "".join(f"<dt>{_e(k)}</dt><dd>{_e('-' if v is None else v)}</dd>" for k, v in facts)
    error = (f'<p class="error">Failed: {_e(row.get("error") or "no error recorded")}</p>\n'
             if not is_ok(row) else "")
    metrics = "".join(f'<tr><td>{_e(label)}</td><td class="num">{_e(pct(row.get(key)))}</td></tr>'
                      for key, label in FRACTION_METRICS)
    links = ("<ul>" + "".join(f'<li><a href="{_url(f)}">{_e(f)}</a></li>' for f in files) + "</ul>"
             if files else "<p>No files in this cell's folder.</p>")
    recipe = json.dumps(row.get("recipe"), indent=2, sort_keys=True, default=str)
    body = (f'<p><a href="../../index.html">&larr; all cells</a></p>\n<h1>{_e(title)}</h1>\n{error}'
            f'<dl class="meta">{dl}</dl>\n<h2>Metrics (%)</h2>\n<table>{metrics}</table>\n'
            f"<h2>Files</h2>\n{links}\n<h2>Recipe</h2>\n<pre>{_e(recipe)}</pre>\n")
    return _page(f"Cell {row['cell']}: {title}", body)
