"""The image-scaling backdoor (Quiring and Rieck, DLS 2020) end to end on an upscaled MNIST or CIFAR-10 subset, through the
command line a user runs: the folder written K times larger, poisoned with ``backdoorlab poison-folder`` against
the victim's resize, the victim's models trained with ``backdoorlab train --resize ... [--resize-defense
median]``, measured with ``backdoorlab evaluate --poison-record``; then what STRIP (its detection rate on triggered
test images at the threshold calibrated on the clean budget) and the training-set detectors (``backdoorlab
detect-poison``, precision and recall against the record) see on the undefended models, and a figure.

    OMP_NUM_THREADS=1 python benchmarks/image_scaling_backdoor.py --work bench-out/image-scaling \
        --upscale 4 --epochs 5 --figure
    OMP_NUM_THREADS=1 python benchmarks/image_scaling_backdoor.py --work bench-out/image-scaling \
        --upscale 8 --epochs 5 --no-detectors --no-clean --victims "no defense" "area scaling"
    OMP_NUM_THREADS=1 python benchmarks/image_scaling_backdoor.py --work bench-out/image-scaling \
        --dataset cifar10 --upscale 4 --epochs 10 --figure

Writes WORK/upscale-K/results.json (WORK/DATASET-upscale-K/ for a data set other than MNIST; every command's JSON
output and the commands themselves) and results.md, and docs/img/image-scaling-K.png (image-scaling-DATASET-K.png)
with --figure.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
CLI = [sys.executable, "-W", "ignore", "-c", "from backdoorlab.cli import main; import sys; sys.exit(main())"]
IMAGE_SIZE = {"mnist": 28, "cifar10": 32}  # the size the victim's pipeline resizes to
TRIGGER = ["--trigger", "badnets", "--target", "0", "--trigger-size", "3"]
# per resize the attacker targets: the victims' pipelines (name, --resize, --resize-defense)
VICTIMS = {
    "bilinear": [("no defense", "bilinear", None), ("area scaling", "area", None),
                 ("median filter", "bilinear", "median"), ("Lanczos (default)", "lanczos", None)],
    "nearest": [("no defense", "nearest", None), ("area scaling", "area", None), ("median filter", "nearest", "median")],
}


def run(args: list[str], log: list) -> dict:
    """Run a backdoorlab command with --json; its JSON output (the last line)."""
    cmd = [*CLI, *args, "--json"]
    tick = time.time()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"failed ({done.returncode}): backdoorlab {shlex.join(args)}\n{done.stderr}")
    out = json.loads(done.stdout.strip().splitlines()[-1])
    log.append({"command": "backdoorlab " + shlex.join(args), "seconds": round(time.time() - tick, 1)})
    print(f"{time.time() - tick:6.0f} s  backdoorlab {shlex.join(args)}", flush=True)
    return out


def strip_seen(model_dir: str, folder: str, record: str, images: int, seed: int) -> dict:
    """STRIP on the model: threshold from 500 clean-budget images (1% FRR), its rejection rate on ``images``
    clean test images and its detection rate on the same images with the recorded trigger stamped (those not of
    the target label)."""
    from backdoorlab.attacks import backdoor_from_dict
    from backdoorlab.checkpoint_data import checkpoint_clean_budget
    from backdoorlab.detectors.strip import StripConfig, StripDetector
    from backdoorlab.models import load_for
    from backdoorlab.runs.dataset import run_dataset
    from backdoorlab.runs.poison_folder import read_record

    ds = run_dataset(f"folder:{folder}", model_dir=model_dir)
    model, meta = load_for(model_dir, ds)
    budget = checkpoint_clean_budget(ds, meta, 1000, seed)
    backdoor = backdoor_from_dict(read_record(record)["backdoor"])
    pick = torch.randperm(len(ds.test_y), generator=torch.Generator().manual_seed(seed))
    pick = pick[backdoor.eligible(ds.test_y[pick])][:images]
    clean = ds.test_x[pick].float() / 255
    triggered = backdoor.trigger.apply(clean)
    det = StripDetector(model, budget.x, StripConfig(seed=seed), progress=False)
    det.fit(budget.x[:500])
    return {k: v for k, v in det.evaluate(clean, triggered).items() if not isinstance(v, (list, np.ndarray))}


def figure(folder: Path, record: dict, size: tuple[int, int], path: Path, method: str) -> None:
    """Source, attack image and what the model sees (the victim's resize, area scaling, median filter then the
    resize) for three poisoned images, as one PNG."""
    from PIL import Image

    from backdoorlab.data.image_size import resize_array
    from backdoorlab.data.folder import decode

    rows = []
    for entry in record["poisoned"][:3]:
        source = decode(Path(record["source"]) / entry["source"])
        attack = decode(folder / entry["file"])
        big = [source, attack]
        small = [resize_array(attack, size, method), resize_array(attack, size, "area"),
                 resize_array(attack, size, method, "median")]
        scale = source.shape[0] // size[0]
        tiles = big + [s.repeat(scale, axis=0).repeat(scale, axis=1) for s in small]
        gap = np.full((source.shape[0], 4, *source.shape[2:]), 255, dtype=np.uint8)
        rows.append(np.concatenate([t for tile in tiles for t in (tile, gap)][:-1], axis=1))
    grid = np.concatenate([r for row in rows
                           for r in (row, np.full((4, *row.shape[1:]), 255, np.uint8))][:-1], axis=0)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(grid).save(path)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--work", type=Path, required=True)
    ap.add_argument("--dataset", choices=sorted(IMAGE_SIZE), default="mnist")
    ap.add_argument("--upscale", type=int, default=4)
    ap.add_argument("--limit", default="10000,2000")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--poison-rate", type=float, default=0.1)
    ap.add_argument("--methods", nargs="+", default=["bilinear", "nearest"], choices=sorted(VICTIMS))
    ap.add_argument("--strip-images", type=int, default=500)
    ap.add_argument("--figure", action="store_true", help="write docs/img/image-scaling-K.png")
    ap.add_argument("--no-detectors", action="store_true",
                    help="skip STRIP and the training-set detectors on the undefended models")
    ap.add_argument("--no-clean", action="store_true", help="skip the clean reference model")
    ap.add_argument("--victims", nargs="+", default=None, metavar="NAME",
                    help="only these victims' pipelines (default all: 'no defense', 'area scaling', 'median filter', "
                         "'Lanczos (default)')")
    args = ap.parse_args()
    tag = f"upscale-{args.upscale}" if args.dataset == "mnist" else f"{args.dataset}-upscale-{args.upscale}"
    work = args.work.resolve() / tag
    work.mkdir(parents=True, exist_ok=True)
    result_file = work / "results.json"
    results = json.loads(result_file.read_text()) if result_file.exists() else {"commands": [], "models": {}}
    log = results["commands"]
    clean = work / f"{args.dataset}-folder"
    if not clean.exists():
        sys.path.insert(0, str(ROOT / "benchmarks"))
        import write_image_folder
        write_image_folder.main([args.dataset, str(clean), "--upscale", str(args.upscale), "--limit", args.limit])
        log.append({"command": f"python benchmarks/write_image_folder.py {args.dataset} {clean} --upscale {args.upscale} "
                               f"--limit {args.limit}"})
    size = (str(IMAGE_SIZE[args.dataset]),)
    train = ["--arch", "small-cnn", "--image-size", size[0], "--epochs", str(args.epochs), "--seed", "0"]
    for method in args.methods:
        poisoned = work / f"poisoned-{method}"
        if not poisoned.exists():
            results[f"poison-{method}"] = run(["poison-folder", str(clean), "--scale-to", size[0], "--resize", method,
                                               *TRIGGER, "--poison-rate", str(args.poison_rate), "--out", str(poisoned),
                                               "--no-progress"], log)
        record = json.loads((poisoned / "poisoning.json").read_text())
        if args.figure and method == args.methods[0]:
            side = IMAGE_SIZE[args.dataset]
            name = f"image-scaling-{args.upscale}.png" if args.dataset == "mnist" else f"image-scaling-{tag}.png"
            figure(poisoned, record, (side, side), ROOT / "docs" / "img" / name.replace("-upscale", ""), method)
        for name, resize, defense in VICTIMS[method]:
            key = f"{method}: {name}"
            if key in results["models"] or (args.victims and name not in args.victims):
                continue
            model = work / "models" / f"{method}-{resize}-{defense or 'none'}"
            flags = ["--resize", resize] + (["--resize-defense", defense] if defense else [])
            m = {"train": run(["train", "--dataset", f"folder:{poisoned}", *train, *flags, "--out", str(model),
                               "--no-progress"], log)}
            m["evaluate"] = run(["evaluate", str(model), "--poison-record", str(poisoned)], log)
            if name == "no defense" and not args.no_detectors:
                m["strip"] = strip_seen(str(model), str(poisoned), str(poisoned), args.strip_images, 0)
                for detector in ("activation-clustering", "spectral-signatures"):
                    m[detector] = run(["detect-poison", str(model), "--dataset", f"folder:{poisoned}", "--detector",
                                       detector, "--poison-record", str(poisoned), "--no-progress"], log)
            results["models"][key] = m
            result_file.write_text(json.dumps(results, indent=1))
    if "clean model" not in results["models"] and not args.no_clean:
        model = work / "models" / "clean-bilinear"
        m = {"train": run(["train", "--dataset", f"folder:{clean}", *train, "--resize", "bilinear", "--out",
                           str(model), "--no-progress"], log)}
        record = work / f"poisoned-{args.methods[0]}"
        m["evaluate"] = run(["evaluate", str(model), "--poison-record", str(record)], log)
        results["models"]["clean model"] = m
    result_file.write_text(json.dumps(results, indent=1))
    lines = ["| victim's pipeline | CA | ASR |", "| --- | --- | --- |"]
    for key, m in results["models"].items():
        e = m["evaluate"]
        lines.append(f"| {key} | {100 * e['clean_accuracy']:.2f}% | {100 * e['attack_success_rate']:.2f}% |")
    (work / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    return 0


if __name__ == "__main__":
    sys.exit(main())
