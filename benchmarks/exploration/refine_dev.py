"""How many refine steps? Fine-tune a two-model sanitizer run's chosen model on the whole budget and score it on
images the defender would not have.

Rebuilds the model at the run's chosen t from RUN/curve.safetensors (the curve does not depend on the refine
step, so this is the model the sanitizer had before refining), then for each STEPS value repeats the sanitizer's
refine step (``SanitizerConfig.train_config(steps, refine_lr, seed + 4)`` on fit part + validation slice, batch
norm re-estimated on the budget) and prints CA on the development images (the held-out pool outside the budget:
never the test set, never the budget) next to test CA and ASR.

    BACKDOORLAB_DATA=../shared/data python benchmarks/exploration/refine_dev.py bench-out/mnist/sanitized-two-1000 0 300 600 1200
"""

from __future__ import annotations

import dataclasses
import json
import pathlib
import sys
import time

import safetensors.torch
import torch

from backdoorlab.budget import clean_budget, holdout_split
from backdoorlab.curves import Curve, reestimate_bn
from backdoorlab.data import load_dataset
from backdoorlab.defenses import ModeConnectivitySanitizer, SanitizerConfig
from backdoorlab.defenses.finetune import finetune
from backdoorlab.metrics import accuracy, evaluate, predict
from backdoorlab.models import create_model
from backdoorlab.pipeline import backdoor_of, load_for, resolve_bn_augment


def main():
    run, steps_list = pathlib.Path(sys.argv[1]), [int(s) for s in sys.argv[2:]] or [0, 600]
    config = json.loads((run / "config.json").read_text())
    t = json.loads((run / "path.json").read_text())["t"]
    ds = load_dataset(config["dataset"])
    loaded = [load_for(p, ds) for p in config["models"]]
    if len(loaded) != 2:
        sys.exit("refine_dev handles two-model runs (a one-model run's second endpoint is not saved)")
    cfg = resolve_bn_augment(SanitizerConfig(**config["sanitizer"]), loaded[0][1])
    budget = clean_budget(ds, config["clean_budget"], seed=config["budget_seed"], holdout=config["holdout"])
    arch, a = loaded[0][1]["arch"], loaded[0][1]["arch_args"]
    sanitizer = ModeConnectivitySanitizer(cfg, lambda: create_model(arch, **a), progress=False)
    fit_part, _ = sanitizer.split_budget(budget)
    curve = Curve(loaded[0][0], loaded[1][0], kind=cfg.curve, init="midpoint")
    control = safetensors.torch.load_file(str(run / "curve.safetensors"))
    for name, p in zip(curve.names, curve.control):
        p.data.copy_(control[name])
    _, pool = holdout_split(len(ds.train_y), config["holdout"])
    dev = pool[~torch.isin(pool, budget.indices)]
    backdoor = backdoor_of(loaded[0][1])
    print(f"{run}: t = {t}, {len(dev)} development images", flush=True)
    for steps in steps_list:
        tick = time.time()
        model = curve.model_at(t, bn_data=sanitizer.bn_data(fit_part))
        if steps:
            tc = cfg.train_config(steps, cfg.refine_lr, cfg.seed + 4)
            model = finetune(model, budget.x, budget.y, dataclasses.replace(tc), progress=False)
            reestimate_bn(model, sanitizer.bn_data(budget))
        model.eval()
        dev_acc = accuracy(predict(model, ds.train_x[dev]), ds.train_y[dev])
        m = evaluate(model, ds.test_x, ds.test_y, backdoor, ds.num_classes)
        print(f"refine {steps:5d} steps: dev {dev_acc:.4f}  test CA {m['clean_accuracy']:.4f} "
              f"ASR {m['attack_success_rate']:.4f}  ({time.time() - tick:.0f} s)", flush=True)


if __name__ == "__main__":
    main()
