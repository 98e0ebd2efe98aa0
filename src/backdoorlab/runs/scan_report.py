"""The HTML report of ``backdoorlab scan``: the verdict, the reversed triggers as PNGs, the mask norms and
anomaly indices per label (``norms.png``), and the configuration; every file written atomically."""

from __future__ import annotations

import html
import pathlib

import numpy as np
import torch

from ..defenses.neural_cleanse import NeuralCleanseResult
from ..io import atomic_write_json, atomic_write_text, save_figure_png


def plot_norms(result: dict, out, names: list[str]) -> None:
    """Bar plots of the mask L1 norm and the anomaly index per label, the suspected target in red."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = result["labels"]
    colors = ["tab:red" if lab in result["flagged_labels"] else "tab:blue" for lab in labels]
    ticks = [names[lab] if lab < len(names) else str(lab) for lab in labels]
    fig, (a1, a2) = plt.subplots(1, 2, figsize=(10, 3.6), dpi=110)
    a1.bar(range(len(labels)), result["l1_norms"], color=colors)
    a1.axhline(float(np.median(result["l1_norms"])), color="k", lw=1, ls="--", label="median")
    a1.set_title("L1 norm of the reversed mask", fontsize=10)
    a1.legend(fontsize=8)
    a2.bar(range(len(labels)), result["anomaly_indices"], color=colors)
    a2.axhline(result["threshold"], color="tab:red", lw=1, ls="--", label=f"threshold {result['threshold']:g}")
    a2.set_title("anomaly index (labels below the median)", fontsize=10)
    a2.legend(fontsize=8)
    for a in (a1, a2):
        a.set_xticks(range(len(labels)), ticks, fontsize=8, rotation=45 if max(map(len, ticks)) > 3 else 0)
        a.set_xlabel("label")
        a.grid(alpha=0.3, axis="y")
    save_figure_png(fig, out)
    plt.close(fig)


def write_report(report_dir, result: dict, nc: NeuralCleanseResult, examples: torch.Tensor, names: list[str]) -> None:
    """Write report.json, config.json, triggers/*.png, norms.png and index.html to ``report_dir``."""
    out = pathlib.Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    files = nc.save_images(out / "triggers", examples[:8])
    plot_norms(result, out / "norms.png", names)
    atomic_write_json(out / "config.json", result["config"])
    atomic_write_json(out / "report.json", result)
    atomic_write_text(out / "index.html", render_html(result, files, names))


def render_html(result: dict, files: dict, names: list[str]) -> str:
    """A self-contained HTML page (images referenced by relative path) with the verdict and the evidence."""
    e = html.escape
    if result["backdoored"]:
        t = result["suspected_target"]
        verdict = (f"<p class='bad'>Backdoored: label <b>{t}</b> ({e(str(result['suspected_target_name']))}) needs a "
                   f"much smaller trigger than the others (anomaly index {result['anomaly_index']:.2f} &gt; "
                   f"{result['threshold']:g}).</p>")
    else:
        verdict = (f"<p class='ok'>No backdoor found: the largest anomaly index is {result['anomaly_index']:.2f} "
                   f"(threshold {result['threshold']:g}).</p>")
    rows = []
    order = np.argsort(result["l1_norms"])
    for i in order:
        lab = result["labels"][i]
        cells = "".join(f"<td><img src='triggers/{e(files[f'{k}_{lab}'])}' alt='{k} {lab}'></td>"
                        for k in ("mask", "pattern", "trigger", "examples") if f"{k}_{lab}" in files)
        cls = " class='flag'" if lab in result["flagged_labels"] else ""
        rows.append(f"<tr{cls}><td>{lab}</td><td>{e(names[lab] if lab < len(names) else str(lab))}</td>"
                    f"<td>{result['l1_norms'][i]:.1f}</td><td>{result['anomaly_indices'][i]:.2f}</td>"
                    f"<td>{100 * result['attack_success'][i]:.1f}%</td>"
                    f"<td>{'yes' if result['converged'][i] else 'no'}</td>{cells}</tr>")
    strip = result.get("strip")
    strip_html = ""
    if strip:
        ce = strip["clean_entropy"]
        strip_html = (f"<h2>STRIP threshold</h2><p>Inputs whose mean prediction entropy over {strip['config']['n_overlays']} "
                      f"superimposed clean images is below <b>{strip['threshold']:.4f}</b> bits are flagged as "
                      f"trojaned; fitted on {strip['n_clean']} clean budget images for a false-rejection rate of "
                      f"{100 * strip['frr_target']:.1f}% (clean entropy: mean {ce['mean']:.3f}, median "
                      f"{ce['median']:.3f}, min {ce['min']:.3f}).</p>")
    cfg = result["config"]
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>backdoorlab scan: {e(cfg['model'])}</title>
<style>
body {{ font-family: sans-serif; max-width: 1100px; margin: 2em auto; color: #222; }}
.bad {{ color: #b00; font-size: 1.2em; }} .ok {{ color: #070; font-size: 1.2em; }}
table {{ border-collapse: collapse; }} td, th {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; }}
tr.flag {{ background: #fdd; }} img {{ image-rendering: pixelated; }}
pre {{ background: #f6f6f6; padding: 8px; font-size: 0.85em; }}
</style></head><body>
<h1>backdoorlab scan</h1>
<p>Model <code>{e(cfg['model'])}</code> ({e(str(cfg['arch']))}, {e(cfg['dataset'])}); clean budget of
{cfg['clean_budget']} held-out images (seed {cfg['budget_seed']}).</p>
{verdict}
<h2>Neural Cleanse</h2>
<p>For every label, the smallest mask and pattern that send the clean images to that label; a backdoor target
stands out with a much smaller mask. Anomaly index = |L1 - median| / (1.4826 MAD), for labels below the median.
Took {result['seconds']['neural_cleanse']:.0f} s.</p>
<img src="norms.png" alt="mask norms and anomaly indices" style="max-width:100%">
<table><tr><th>label</th><th>name</th><th>mask L1</th><th>anomaly index</th><th>reversed-trigger success</th>
<th>converged</th><th>mask</th><th>pattern</th><th>mask &times; pattern</th><th>stamped clean images</th></tr>
{''.join(rows)}
</table>
{strip_html}
<h2>Configuration</h2><pre>{e(_json(cfg))}</pre>
</body></html>
"""


def _json(obj) -> str:
    import json

    return json.dumps(obj, indent=2)
