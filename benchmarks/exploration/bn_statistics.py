"""How much clean accuracy does batch-norm re-estimation cost a CIFAR-10 endpoint, by what it is re-estimated on?

Loads a checkpoint (default: the CIFAR-10 benchmark's endpoint 1), re-estimates its batch-norm statistics on the
fit part of a 2,500-image clean budget (pixel-exact; passed once or four times through `crop-flip-jpeg`; four
times through `jpeg` alone) and prints CA and ASR on the full test set for each, after the model's own
statistics, with the share of clean (untriggered) test images the model sends to the backdoor's label. The run
behind "Batch norm re-estimated on budget images augmented as in training" in docs/benchmarks.md.

``--full``: also re-estimate on the whole training part (every image outside the held-out pool, once through
`crop-flip-jpeg`), clean and with the model's recorded trigger stamped after augmentation on the poisoned
fraction of the images, as the attacker's training did. It tells whether the statistics the budget gives are
off because the budget is small, or because the suspect's own statistics describe poisoned data.

    BACKDOORLAB_DATA=../shared/data python benchmarks/exploration/bn_statistics.py [MODEL_DIR] [--full]
"""

import copy
import sys

import torch

from backdoorlab.augment import augment
from backdoorlab.budget import clean_budget, training_part
from backdoorlab.curves import reestimate_bn
from backdoorlab.data import load_dataset
from backdoorlab.metrics import accuracy, evaluate, predict
from backdoorlab.models.sidecar import planted_attack
from backdoorlab.attacks import backdoor_of
from backdoorlab.models import load_for
from backdoorlab.tensors import to_float


def main():
    args = [a for a in sys.argv[1:] if a != "--full"]
    model_dir = args[0] if args else "bench-out/cifar10/endpoint-1"
    ds = load_dataset("cifar10")
    model, meta = load_for(model_dir, ds)
    backdoor = backdoor_of(meta)
    if backdoor is None:
        sys.exit(f"error: {model_dir} records no backdoor to measure")
    fit = clean_budget(ds, 2500, holdout=meta["holdout"]["size"]).split(250)[0]

    keep = backdoor.eligible(ds.test_y)
    backdoor_labels = backdoor.target_labels(ds.test_y, ds.num_classes)[keep]

    def report(m, tag):
        r = evaluate(m, ds.test_x, ds.test_y, backdoor, ds.num_classes)
        # clean (untriggered) images the model sends to the backdoor's label: a backdoor that fires without its
        # trigger costs clean accuracy
        misfire = accuracy(predict(m, ds.test_x)[keep], backdoor_labels)
        print(f"{tag:<28} CA {100 * r['clean_accuracy']:.2f}%  ASR {100 * r['attack_success_rate']:.2f}%  "
              f"clean images sent to the backdoor label {100 * misfire:.2f}%", flush=True)

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
    if "--full" not in sys.argv:
        return
    train_x, _ = training_part(ds, meta["holdout"]["size"])
    xs = augment(to_float(train_x), "crop-flip-jpeg", g)
    report(reestimated(xs), f"training part x1 ({len(xs)})")
    rate = (planted_attack(meta) or {}).get("poison_rate", 0.1)
    stamped = torch.randperm(len(xs), generator=g)[:round(rate * len(xs))]
    parts = backdoor.parts  # several for the dynamic backdoor: the stamped images are dealt out between them
    for i, part in enumerate(parts):
        chunk = stamped[i::len(parts)]
        xs[chunk] = part.trigger.apply(xs[chunk])
    report(reestimated(xs), f"training part, {rate:.0%} stamped")


if __name__ == "__main__":
    main()
