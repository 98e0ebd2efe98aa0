"""The sweep's human-readable results (backdoorlab.sweeps.report): the files it writes, their contents, and the
index page in a real headless browser (loads without errors, sorts by a clicked column, figures and links
resolve)."""

import csv
import functools
import http.server
import json
import os
import shutil
import socket
import threading
import urllib.request

import pytest

from backdoorlab.sweeps.report import CSV_COLUMNS, write_results

SWEEP = {"name": "smoke", "config": "sweeps/smoke.toml", "command": "backdoorlab sweep sweeps/smoke.toml --out out",
         "machine": "testhost (Test CPU, 2 cores)", "wall_seconds": 1234.5}


def _row(cell, kind, dataset, attack, seed, defense, ca=None, asr=None, status="ok", **extra):
    """One plausible row; suspect figures and the CA drop are filled in by the caller when they matter."""
    row = {"cell": cell, "kind": kind, "dataset": dataset, "arch": "small-cnn", "seed": seed, "attack": attack,
           "defense": defense, "budget": None if kind == "suspect" else 1000,
           "budget_seed": None if kind == "suspect" else 0, "status": status, "error": None,
           "clean_accuracy": ca, "attack_success_rate": asr, "robust_accuracy": None,
           "suspect_clean_accuracy": None, "suspect_attack_success_rate": None, "ca_drop": None, "der": None,
           "post_retune_asr": None, "flagged": None, "detail": None, "seconds": 12.0,
           "machine": "testhost (Test CPU)", "recipe": {"dataset": dataset, "attack": {"name": attack}, "seed": seed,
                                                        "defense": {"name": defense, "options": {}}},
           "report": f"cells/{cell}/"}
    row.update(extra)
    return row


def _rows():
    """Eight cells over two data sets: suspects, defenses (one failed), a detector; fashion has no ok defense."""
    rows = [
        _row("0000000000000001", "suspect", "mnist", "badnets", 1, "none", 0.9927, 1.0, seconds=300.0),
        _row("0000000000000002", "suspect", "mnist", "clean", 1, "none", 0.9928, 0.0014),
        _row("0000000000000003", "defense", "mnist", "badnets", 1, "i-bau", 0.9636, 0.001, seconds=47.2,
             suspect_clean_accuracy=0.9927, suspect_attack_success_rate=1.0, ca_drop=0.0291, der=0.9848,
             robust_accuracy=0.95, post_retune_asr=0.42),
        _row("0000000000000004", "defense", "mnist", "clean", 1, "i-bau", 0.9742, 0.0027, seconds=40.0,
             suspect_clean_accuracy=0.9928, suspect_attack_success_rate=0.0014, ca_drop=0.0186, der=0.4907),
        _row("0000000000000005", "defense", "mnist", "badnets", 1, "fst", 0.9799, 0.0029, seconds=369.4,
             suspect_clean_accuracy=0.9927, suspect_attack_success_rate=1.0, ca_drop=0.0128, der=0.9922),
        _row("0000000000000006", "suspect", "fashion-mnist", "badnets", 2, "none", 0.9012, 0.998),
        _row("0000000000000007", "defense", "fashion-mnist", "badnets", 2, "fst", status="failed",
             error="RuntimeError: out of memory <on> \"cpu\" & more"),
        _row("0000000000000008", "detector", "mnist", "badnets", 1, "neural-cleanse", flagged=True,
             detail="label 0, anomaly index 4.50"),
    ]
    for r in rows:
        if r["kind"] == "detector":
            r["budget"] = 1000
    return rows


@pytest.fixture
def written(tmp_path):
    """The rows written into tmp_path, with a file the engine left in one cell's folder."""
    rows = _rows()
    (tmp_path / "cells" / rows[2]["cell"]).mkdir(parents=True)
    (tmp_path / "cells" / rows[2]["cell"] / "report.json").write_text('{"ok": true}\n')
    write_results(tmp_path, rows, SWEEP)
    return tmp_path, rows


def test_json_round_trips_and_is_byte_identical(written, tmp_path_factory):
    out, rows = written
    data = json.loads((out / "results.json").read_text())
    assert data == {"sweep": SWEEP, "rows": rows}
    again = tmp_path_factory.mktemp("again")
    write_results(str(again), _rows(), dict(SWEEP))
    assert (again / "results.json").read_bytes() == (out / "results.json").read_bytes()
    assert (again / "results.md").read_bytes() == (out / "results.md").read_bytes()
    assert (again / "index.html").read_bytes() == (out / "index.html").read_bytes()
    assert not list(out.rglob(".*.tmp"))  # no temporary files left behind


def test_csv_has_one_line_per_row(written):
    out, rows = written
    text = (out / "results.csv").read_text()
    assert len(text.splitlines()) == len(rows) + 1
    with open(out / "results.csv", newline="") as f:
        read = list(csv.DictReader(f))
    assert list(read[0].keys()) == list(CSV_COLUMNS)
    assert [r["cell"] for r in read] == [r["cell"] for r in rows]
    assert read[2]["clean_accuracy"] == "0.9636" and read[2]["budget"] == "1000"
    assert read[0]["budget"] == "" and read[7]["flagged"] == "true"
    assert read[6]["status"] == "failed" and read[6]["error"].startswith("RuntimeError")
    assert json.loads(read[0]["recipe"]) == rows[0]["recipe"]


def test_markdown_tables(written):
    out, _ = written
    md = (out / "results.md").read_text()
    assert "Machine: testhost (Test CPU, 2 cores); clean budget(s): 1,000 images (budget seed 0)." in md
    assert "| attack | seed | none | i-bau | fst |" in md
    assert "| badnets | 1 | 99.27 / 100.00 | 96.36 / 0.10, 47 s | 97.99 / 0.29, 369 s |" in md
    assert "| clean | 1 | 99.28 / 0.14 | 97.42 / 0.27, 40 s | not run |" in md
    assert "| badnets | 2 | 90.12 / 99.80 | failed |" in md
    assert "RuntimeError: out of memory" in md
    assert "| mnist | small-cnn | badnets | 1 | neural-cleanse | yes | label 0, anomaly index 4.50 |" in md


def test_figures_only_for_data_sets_with_ok_defenses(written):
    out, _ = written
    png = out / "figures" / "mnist.png"
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not (out / "figures" / "fashion-mnist.png").exists()
    index = (out / "index.html").read_text()
    assert 'src="figures/mnist.png"' in index and "fashion-mnist.png" not in index


def test_cell_pages(written):
    out, rows = written
    for r in rows:
        page = (out / "cells" / r["cell"] / "index.html").read_text()
        assert 'href="../../index.html"' in page
        assert r["cell"] in page
    page = (out / "cells" / rows[2]["cell"] / "index.html").read_text()
    assert 'href="report.json"' in page and "&quot;attack&quot;" in page
    failed = (out / "cells" / rows[6]["cell"] / "index.html").read_text()
    assert "out of memory &lt;on&gt; &quot;cpu&quot; &amp; more" in failed


def test_failed_only_and_no_defense_rows(tmp_path):
    rows = [_row("00000000000000aa", "suspect", "mnist", "badnets", 1, "none", status="failed", error="boom"),
            _row("00000000000000bb", "suspect", "mnist", "clean", 1, "none", 0.99, None)]
    write_results(tmp_path, rows, SWEEP)
    md = (tmp_path / "results.md").read_text()
    assert "| badnets | 1 | failed |" in md and "| clean | 1 | 99.00 / - |" in md
    assert not (tmp_path / "figures").exists()
    assert 'id="results"' in (tmp_path / "index.html").read_text()
    write_results(tmp_path, [], SWEEP)
    assert json.loads((tmp_path / "results.json").read_text())["rows"] == []


def test_rejects_bad_cell_ids(tmp_path):
    with pytest.raises(ValueError):
        write_results(tmp_path, [_row("../../etc", "suspect", "mnist", "x", 1, "none")], SWEEP)
    row = _row("00000000000000aa", "suspect", "mnist", "x", 1, "none")
    with pytest.raises(ValueError):
        write_results(tmp_path, [row, dict(row)], SWEEP)


# ---------------------------------------------------------------------------------------------------------------
# The page in a real browser.

BROWSER_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _browser_or_skip():
    """The sync_playwright factory and the chromium path; skips without them unless BACKDOORLAB_REQUIRE_BROWSER=1
    (CI), where their absence fails the test instead."""
    required = os.environ.get("BACKDOORLAB_REQUIRE_BROWSER") == "1"
    give_up = pytest.fail if required else pytest.skip
    try:
        from playwright.sync_api import sync_playwright
    except ImportError as e:
        give_up(f"playwright is not importable ({e}); the browser test of the sweep's index.html needs it")
    path = os.environ.get("BACKDOORLAB_CHROMIUM") or "/usr/bin/chromium"
    if not (os.path.isfile(path) and os.access(path, os.X_OK)):
        path = shutil.which(path) or ""
    if not path:
        give_up("no chromium executable (set BACKDOORLAB_CHROMIUM or install /usr/bin/chromium); "
                "the browser test of the sweep's index.html needs one")
    return sync_playwright, path


@pytest.fixture
def served(written):
    """The results folder served over http on 127.0.0.1 (a free port), in a daemon thread; yields the base URL."""
    out, rows = written

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    with socket.socket() as s:  # ThreadingHTTPServer would bind port 0 too; this keeps the address explicit
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    server = http.server.ThreadingHTTPServer(("127.0.0.1", port), functools.partial(Quiet, directory=str(out)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{port}/", rows
    finally:
        server.shutdown()
        server.server_close()


def _column(page, key):
    """The data-value of column ``key`` in the table's current row order (None for blanks)."""
    values = page.eval_on_selector(
        "#results", """(table, key) => {
            const col = Array.from(table.tHead.rows[0].cells).findIndex(th => th.dataset.key === key);
            return Array.from(table.tBodies[0].rows, tr => tr.cells[col].getAttribute("data-value"));
        }""", key)
    return [None if v == "" else float(v) for v in values]


def test_index_page_in_browser(request):
    sync_playwright, chromium = _browser_or_skip()
    base, rows = request.getfixturevalue("served")  # after the check, so a skipped test serves nothing
    problems = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=BROWSER_ARGS)
        try:
            page = browser.new_page()
            page.on("console", lambda m: m.type == "error" and problems.append(f"console: {m.text}"))
            page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
            page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} {r.failure}"))
            page.on("response", lambda r: r.status >= 400 and problems.append(f"HTTP {r.status}: {r.url}"))
            response = page.goto(base + "index.html", wait_until="load")
            assert response is not None and response.status == 200

            cells = page.eval_on_selector_all("#results tbody tr", "trs => trs.map(tr => tr.dataset.cell)")
            assert sorted(cells) == sorted(r["cell"] for r in rows) and len(cells) == len(rows)
            failed = page.eval_on_selector_all("#results tbody tr.failed", "trs => trs.map(tr => tr.title)")
            assert failed == [rows[6]["error"]]

            known = sorted(r["clean_accuracy"] for r in rows if r["clean_accuracy"] is not None)
            blanks = [None] * (len(rows) - len(known))
            page.click('#results th[data-key="clean_accuracy"]')
            assert _column(page, "clean_accuracy") == known + blanks
            page.click('#results th[data-key="clean_accuracy"]')
            assert _column(page, "clean_accuracy") == known[::-1] + blanks

            widths = page.eval_on_selector_all("img", "imgs => imgs.map(i => [i.getAttribute('src'), i.naturalWidth])")
            assert widths and all(w > 0 for _, w in widths), widths

            links = page.eval_on_selector_all("#results tbody a", "as => as.map(a => a.href)")
            assert len(links) == len(rows)
            for url in links:
                with urllib.request.urlopen(url, timeout=5) as r:
                    assert r.status == 200 and b"../../index.html" in r.read()
            page.goto(links[0], wait_until="load")
            page.click("text=all cells")
            page.wait_for_selector("#results")
        finally:
            browser.close()
    assert not problems, problems


def test_pending_cells_of_a_running_sweep(tmp_path):
    """While a sweep runs its results are written with the cells not run yet as "pending": counted apart from
    the failed ones, shown as pending, with no page of their own (their folder is the job's to make)."""
    rows = _rows()
    rows[4] = {**rows[4], "status": "pending", "clean_accuracy": None, "attack_success_rate": None,
               "seconds": None, "machine": None}
    write_results(tmp_path, rows, {**SWEEP, "complete": False})
    md = (tmp_path / "results.md").read_text()
    assert "Partial results: the cells marked pending have not run yet" in md and "6 ok, 1 failed, 1 pending" in md
    assert "| pending" in md
    assert not (tmp_path / "cells" / rows[4]["cell"]).exists()
    page = (tmp_path / "index.html").read_text()
    assert f'data-cell="{rows[4]["cell"]}" data-kind="defense" class="pending"' in page
    assert "partial results: pending cells have not run yet" in page
