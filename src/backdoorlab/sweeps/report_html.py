"""index.html (one self-contained page: inline CSS and JS, nothing fetched from elsewhere, with a sortable
table of all rows and the figures) and cells/<cell>/index.html (a page per cell: its recipe, metrics and the
files in its folder)."""

from __future__ import annotations

import json
import pathlib
from typing import Any
from urllib.parse import quote

from .report_format import (FRACTION_METRICS, escape_html, flagged_text, is_ok, is_pending, number, pct,
                            seconds_text, status_counts, wall_text)


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
            f"{_FAVICON}\n<title>{escape_html(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n{body}\n{script}"
            "</body>\n</html>\n")


def _url(path: str) -> str:
    """A relative path as an href/src: each part percent-encoded, then HTML-escaped."""
    return escape_html(quote(path, safe="/"))


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
    x = number(value)
    if x is None:
        raw, text = "", "-"
    elif kind == "int":
        raw, text = json.dumps(value), str(value)
    else:
        raw = json.dumps(x)
        text = pct(x) if kind == "pct" else f"{x:,.1f}"
    title = f' title="{escape_html(title)}"' if title else ""
    return f'<td class="num" data-value="{escape_html(raw)}"{title}>{escape_html(text)}</td>'


def _index_row(row: dict) -> str:
    """One <tr> of index.html's table (failed rows get class "failed" and their error as the row's title)."""
    cells = []
    for key, _, kind in INDEX_COLUMNS:
        if kind != "text":
            cells.append(_number_td(row.get(key), kind, row.get("machine") if key == "seconds" else ""))
        elif key == "report":
            link = f'<a href="{_url(_cell_page_path(row))}">cell</a>' if not is_pending(row) else ""
            cells.append(f"<td>{link}</td>")
        elif key == "note":
            note = row_note(row)
            cells.append(f'<td class="{"error" if not is_ok(row) else "note"}">{escape_html(note)}</td>')
        else:
            value = row.get(key)
            cls = ' class="status"' if key == "status" else ""
            cells.append(f'<td{cls}>{escape_html("" if value is None else value)}</td>')
    attrs = f' data-cell="{escape_html(row["cell"])}" data-kind="{escape_html(row.get("kind"))}"'
    if is_pending(row):
        attrs += ' class="pending"'
    elif not is_ok(row):
        attrs += f' class="failed" title="{escape_html(row_note(row))}"'
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
            ("machine", sweep.get("machine")), ("wall time", wall_text(sweep)),
            ("cells", f"{len(rows)} ({kinds}): {status_counts(rows)}")]
    if sweep.get("complete") is False:
        meta.append(("state", "partial results: pending cells have not run yet; rewritten as cells finish while the "
                              "sweep runs, and the same command resumes a stopped sweep"))
    dl = "".join(f"<dt>{escape_html(k)}</dt><dd>"
                 f"{'<code>' + escape_html(v) + '</code>' if k == 'command' else escape_html(v)}</dd>"
                 for k, v in meta)
    head = "".join(f'<th tabindex="0" scope="col" data-key="{escape_html(key)}" '
                   f'data-type="{"text" if kind == "text" else "number"}">{escape_html(label)}</th>'
                   for key, label, kind in INDEX_COLUMNS)
    body_rows = "\n".join(_index_row(r) for r in rows)
    figs = "".join(f'<figure><img src="{_url(path)}" alt="{escape_html(f"CA drop against ASR after, {dataset}")}">'
                   f"<figcaption>{escape_html(dataset)}: CA drop (points) against ASR after each defense (%), "
                   "one point "
                   f"per defense and attack, mean over seeds.</figcaption></figure>\n"
                   for dataset, path in figures.items())
    body = (f"<h1>Sweep results: {escape_html(sweep.get('name'))}</h1>\n<dl class=\"meta\">{dl}</dl>\n"
            '<p>Also as <a href="results.json">results.json</a>, <a href="results.csv">results.csv</a> and '
            '<a href="results.md">results.md</a>. Click a column header to sort by it (again to reverse).</p>\n'
            f'<table id="results">\n<thead><tr>{head}</tr></thead>\n<tbody>\n{body_rows}\n</tbody>\n</table>\n'
            + (f"<h2>Figures</h2>\n{figs}" if figs else "<p>No figures: no defense cell ran to the end.</p>\n"))
    return _page(f"Sweep {sweep.get('name')}", body, _SORT_JS)


def folder_files(folder: pathlib.Path, limit: int = 500) -> list[str]:
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
    dl = "".join(f"<dt>{escape_html(k)}</dt><dd>{escape_html('-' if v is None else v)}</dd>" for k, v in facts)
    error = (f'<p class="error">Failed: {escape_html(row.get("error") or "no error recorded")}</p>\n'
             if not is_ok(row) else "")
    metrics = "".join(f'<tr><td>{escape_html(label)}</td><td class="num">{escape_html(pct(row.get(key)))}</td></tr>'
                      for key, label in FRACTION_METRICS)
    links = ("<ul>" + "".join(f'<li><a href="{_url(f)}">{escape_html(f)}</a></li>' for f in files) + "</ul>"
             if files else "<p>No files in this cell's folder.</p>")
    recipe = json.dumps(row.get("recipe"), indent=2, sort_keys=True, default=str)
    body = (f'<p><a href="../../index.html">&larr; all cells</a></p>\n<h1>{escape_html(title)}</h1>\n{error}'
            f'<dl class="meta">{dl}</dl>\n<h2>Metrics (%)</h2>\n<table>{metrics}</table>\n'
            f"<h2>Files</h2>\n{links}\n<h2>Recipe</h2>\n<pre>{escape_html(recipe)}</pre>\n")
    return _page(f"Cell {row['cell']}: {title}", body)
