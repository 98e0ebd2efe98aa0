"""How much clean accuracy does batch-norm re-estimation cost a CIFAR-10 endpoint, by what it is re-estimated on?

Loads a checkpoint (default: the CIFAR-10 benchmark's endpoint 1), re-estimates its batch-norm statistics on the
fit part of a 2,500-image clean budget (pixel-exact; passed once or four times through `crop-flip-jpeg`; four
times through `jpeg` alone) and prints CA and ASR on the full test set for each, after the model's own
statistics. The run behind "Batch norm re-estimated on budget images augmented as in training" in
docs/benchmarks.md.

    BACKDOORLAB_DATA=../shared/data python benchmarks/exploration/bn_statistics.py [MODEL_DIR]
"""

import copy
import sys

import torch

from backdoorlab.augment import augment
from backdoorlab.budget import clean_budget
from backdoorlab.curves import reestimate_bn
from backdoorlab.data import load_dataset
from backdoorlab.metrics import evaluate
from backdoorlab.pipeline import backdoor_of, load_for
from backdoorlab.train import to_float


def main():
    model_dir = sys.argv[1] if len(sys.argv) > 1 else "bench-out/cifar10/endpoint-1"
    ds = load_dataset("cifar10")
    model, meta = load_for(model_dir, ds)
    backdoor = backdoor_of(meta)
    fit = clean_budget(ds, 2500, holdout=meta["holdout"]["size"]).split(250)[0]

    def report(m, tag):
        r = evaluate(m, ds.test_x, ds.test_y, backdoor, ds.num_classes)
        print(f"{tag:<28} CA {100 * r['clean_accuracy']:.2f}%  ASR {100 * r['attack_success_rate']:.2f}%", flush=True)

    def reestimated(images):
        m = copy.deepcopy(model)
        reestimate_bn(m, images)
        return m

    report(model, "own statistics")
    report(reestimated(fit.x), "pixel-exact budget")
    g = torch.Generator().manual_seed(0)
    for passes in (1, 4):
        xs = torch.cat([augment(to_float(fit.x), "crop-flip-jpeg", g) for _ in range(passes)])
        report(reestimated(xs), f"crop-flip-jpeg x{passes}")
    xs = torch.cat([augment(to_float(fit.x), "jpeg", g) for _ in range(4)])
    report(reestimated(xs), "jpeg x4")


if __name__ == "__main__":
    main()
