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
import io
import json
import os
import pathlib
import re
from typing import Any

from ..io import atomic_write_text
from .report_figures import write_figures
from .report_format import is_pending
from .report_html import folder_files, cell_page, index_page
from .report_markdown import results_markdown

#: The columns of ``results.csv``, in order.
CSV_COLUMNS = ("cell", "kind", "dataset", "arch", "seed", "attack", "defense", "budget", "budget_seed", "status",
               "clean_accuracy", "attack_success_rate", "robust_accuracy", "suspect_clean_accuracy",
               "suspect_attack_success_rate", "ca_drop", "der", "post_retune_asr", "flagged", "detail", "seconds",
               "machine", "error", "report", "recipe")

_CELL_ID = re.compile(r"[0-9a-f]{16}")


def write_results(out_dir: str | os.PathLike, rows: list[dict], sweep: dict) -> None:
    """Write the sweep's results under ``out_dir`` (which must exist): results.json, results.csv, results.md,
    figures/<dataset>.png, cells/<cell>/index.html for every row that ran, and index.html. See the module's
    docstring.

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
        atomic_write_text(folder / "index.html", cell_page(r, folder_files(folder)))
    atomic_write_text(out / "index.html", index_page(rows, sweep, figures))





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
