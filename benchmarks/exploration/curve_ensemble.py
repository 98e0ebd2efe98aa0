"""Does averaging the predictions of two points of a sanitizer's path beat either point? Exploration.

Rebuilds a saved two-model run's curve (RUN/curve.safetensors), makes the model at each requested t (batch norm
re-estimated as the sanitizer does) and scores each, and the mean of their softmax outputs, on the validation
slice, on the development images (the held-out pool outside the budget: never the budget, never the test set)
and on the test set (CA, ASR).

    BACKDOORLAB_DATA=../shared/data python benchmarks/exploration/curve_ensemble.py \\
        bench-out/cifar10-two/sanitized-two-2500 0.2 0.8
"""

from __future__ import annotations

import argparse
import pathlib
import sys
import time

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
from common import load_saved_curve  # noqa: E402

from backdoorlab.metrics import accuracy, evaluate, predict  # noqa: E402
from backdoorlab.models import Ensemble  # noqa: E402
from backdoorlab.runs import backdoor_of  # noqa: E402


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("run")
    ap.add_argument("ts", type=float, nargs="+")
    args = ap.parse_args()
    saved = load_saved_curve(args.run)
    ds, sanitizer = saved.dataset, saved.sanitizer
    dev = saved.dev
    backdoor = backdoor_of(saved.loaded[0][1])
    bn_data = sanitizer.bn_data(saved.fit_part)
    models = {}
    print(f"{args.run}: {len(dev)} development images, {len(saved.val_part)} validation", flush=True)

    def score(name, model):
        tick = time.time()
        val = accuracy(predict(model, saved.val_part.x), saved.val_part.y)
        dev_acc = accuracy(predict(model, ds.train_x[dev]), ds.train_y[dev])
        m = evaluate(model, ds.test_x, ds.test_y, backdoor, ds.num_classes)
        print(f"{name:>24}: val {val:.4f} dev {dev_acc:.4f} test CA {m['clean_accuracy']:.4f} "
              f"ASR {m['attack_success_rate']:.4f} ({time.time() - tick:.0f} s)", flush=True)

    for t in args.ts:
        models[t] = saved.curve.model_at(t, bn_data=bn_data)
        score(f"t = {t}", models[t])
    score("mean of " + ", ".join(str(t) for t in args.ts), Ensemble(list(models.values())).eval())


if __name__ == "__main__":
    main()
