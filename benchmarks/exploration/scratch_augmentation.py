"""Which trigger-agnostic augmentation trains the best small-cnn on the fit part of a clean MNIST budget?

Trains a fresh small-cnn (seed 1) on the 90% fit part of the clean budget (seed 0) for STEPS optimizer steps with
the sanitizer's recipe and each augmentation, and scores it on the held-out pool images outside the budget (a
development set: never the test set, never a trigger). The candidates not in backdoorlab.augment are defined here.

    BACKDOORLAB_DATA=../shared/data OMP_NUM_THREADS=1 python benchmarks/exploration/scratch_augmentation.py \\
        1000 2400 affine affine-elastic affine-erase affine-strong elastic
    ... 1000 2400 affine:weight_decay=0.005 affine:steps=4800   # recipe variants: TrainConfig overrides
"""
import json
import sys
import time

import torch

import backdoorlab.train as train_module
from backdoorlab.augment import augment, random_affine, random_elastic
from backdoorlab.budget import clean_budget, default_holdout, holdout_split
from backdoorlab.data import load_dataset
from backdoorlab.defenses.finetune import finetune
from backdoorlab.models import create_model
from backdoorlab.tensors import to_float
from backdoorlab.train import TrainConfig


def random_erase(images, g, p=0.5, area=(0.1, 0.3)):
    """Zero a random rectangle covering ``area`` of the image in a fraction ``p`` of the images."""
    n, _, h, w = images.shape
    s = (area[0] + torch.rand(n, generator=g) * (area[1] - area[0])).sqrt()
    sh, sw = (s * h).long().clamp(min=1), (s * w).long().clamp(min=1)
    y0 = (torch.rand(n, generator=g) * (h - sh + 1)).long()
    x0 = (torch.rand(n, generator=g) * (w - sw + 1)).long()
    on = torch.rand(n, generator=g) < p
    ys, xs = torch.arange(h)[None, :, None], torch.arange(w)[None, None, :]
    box = ((ys >= y0[:, None, None]) & (ys < (y0 + sh)[:, None, None]) & (xs >= x0[:, None, None])
           & (xs < (x0 + sw)[:, None, None]) & on[:, None, None])
    return images.masked_fill(box[:, None], 0.0)


EXTRA = {
    "affine-strong": lambda x, g: random_affine(x, g, degrees=15, translate=0.12, scale=(0.85, 1.15)),
    "elastic": lambda x, g: random_elastic(x, g, alpha=34.0),
    "affine-erase": lambda x, g: random_erase(random_affine(x, g), g),
}


def patched(images, kind, g, padding=None):
    return EXTRA[kind](images, g) if kind in EXTRA else augment(images, kind, g, padding)


train_module.augment = patched
train_module.AUGMENTATIONS = tuple(train_module.AUGMENTATIONS) + tuple(EXTRA)

size, steps = int(sys.argv[1]), int(sys.argv[2])
ds = load_dataset("mnist")
budget = clean_budget(ds, size)
k = int(len(budget) * 0.9)
_, pool = holdout_split(len(ds.train_y), default_holdout("mnist"))
dev = pool[~torch.isin(pool, budget.indices)]
dev_x, dev_y = to_float(ds.train_x[dev]), ds.train_y[dev]
for spec in sys.argv[3:]:  # KIND or KIND:field=value,... (TrainConfig fields, e.g. affine:weight_decay=0.005)
    kind, _, over = spec.partition(":")
    over = {k: json.loads(v) for k, v in (kv.split("=") for kv in over.split(",") if kv)}
    tick = time.time()
    torch.manual_seed(1)
    model = create_model("small-cnn", num_classes=10, in_channels=1, input_size=(28, 28), mean=ds.mean, std=ds.std)
    cfg = TrainConfig(**{**dict(epochs=0, steps=steps, lr=0.05, augment=kind, schedule="onecycle", seed=1), **over})
    model = finetune(model, budget.x[:k], budget.y[:k], cfg, progress=False).eval()
    with torch.no_grad():
        correct = sum((model(dev_x[i:i + 1000]).argmax(1) == dev_y[i:i + 1000]).sum().item()
                      for i in range(0, len(dev_y), 1000))
    print(f"{spec:32s} steps {steps} dev accuracy {correct / len(dev_y):.4f} ({len(dev_y)} images) "
          f"{time.time() - tick:.0f} s", flush=True)
