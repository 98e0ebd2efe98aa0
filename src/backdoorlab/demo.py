"""``backdoorlab demo``: plant a BadNets backdoor in two models, measure it, sanitize, on the bundled digits."""

from __future__ import annotations

import pathlib
import shutil
import time

from .attacks import make_poisoning_attack
from .data import load_dataset
from .defenses import SanitizerConfig
from .io import atomic_write_json
from .report import chosen_text
from .runs import sanitize_run, train_run
from .train import TrainConfig

DEMO_BUDGET = 400
DEMO_TRAIN = dict(epochs=20, lr=0.05, batch_size=64)
DEMO_SANITIZER = dict(steps=500, lr=0.05, batch_size=64, augment="affine")


def run_demo(out: str, seed: int = 0, progress: bool = True, echo=print) -> dict:
    """Train two backdoored small CNNs on ``digits``, sanitize them with a curve, write DIR/report.json + path.png."""
    start = time.time()
    out_dir = pathlib.Path(out)
    out_dir.mkdir(parents=True, exist_ok=True)
    ds = load_dataset("digits")
    attack = make_poisoning_attack("badnets", target=0, poison_rate=0.1)
    echo(f"digits: {len(ds.train_y)} training images (8x8), {len(ds.test_y)} test images; "
         f"BadNets 3x3 white square, target 0, 10% poisoned")
    endpoints = []
    for i in (1, 2):
        cfg = TrainConfig(seed=seed + i, **DEMO_TRAIN)
        _, meta = train_run(ds, "small-cnn", cfg, attack, out=str(out_dir / f"endpoint-{i}"), progress=progress,
                            desc=f"endpoint {i}")
        endpoints.append(meta["metrics"])
        echo(f"  trained backdoored endpoint {i}: CA {100 * meta['metrics']['clean_accuracy']:.1f}%, "
             f"ASR {100 * meta['metrics']['attack_success_rate']:.1f}%")
    cfg = SanitizerConfig(seed=seed, **DEMO_SANITIZER)
    summary = sanitize_run(ds, [str(out_dir / "endpoint-1"), str(out_dir / "endpoint-2")], DEMO_BUDGET,
                           str(out_dir / "sanitized"), cfg, progress=progress)
    shutil.copyfile(out_dir / "sanitized" / "path.png", out_dir / "path.png")
    report = {"dataset": "digits", "arch": "small-cnn", "attack": attack.to_dict(), "clean_budget": DEMO_BUDGET,
              "endpoints": [{"clean_accuracy": e["clean_accuracy"], "attack_success_rate": e["attack_success_rate"]}
                            for e in endpoints],
              "sanitized": {k: summary[k] for k in ("t", "ensemble", "clean_accuracy", "attack_success_rate")},
              "path": summary["path"], "seconds": round(time.time() - start, 1)}
    atomic_write_json(out_dir / "report.json", report)
    echo("")
    echo(f"  {'model':<28} {'CA':>7} {'ASR':>7}")
    for i, e in enumerate(endpoints, 1):
        echo(f"  {'backdoored endpoint %d' % i:<28} {100 * e['clean_accuracy']:6.1f}% {100 * e['attack_success_rate']:6.1f}%")
    s = report["sanitized"]
    label = f"sanitized ({chosen_text(s['t'], s['ensemble'])})"
    echo(f"  {label:<28} {100 * s['clean_accuracy']:6.1f}% {100 * s['attack_success_rate']:6.1f}%")
    echo(f"\nwrote {out_dir / 'report.json'} and {out_dir / 'path.png'} in {report['seconds']:.0f} s")
    return report
