"""Where a multi-target dynamic backdoor sends each trigger location: per location, the share of stamped
non-target test images classified as the location's own target, as another target of the backdoor, and as the
image's clean prediction.

    BACKDOORLAB_DATA=../shared/data python benchmarks/exploration/multi_target_locations.py MODEL_DIR \\
        [--dataset D] [--n-images N]

The dynamic backdoor with several targets tells its targets apart by where the trigger sits (each target has its
own set of border locations). A victim that augments its training data with random crops and horizontal flips
after the attacker stamped the trigger moves those locations: a flip mirrors a location onto the other side of
the border, where another target's locations may lie. The last column names the target whose location is
nearest the mirror image of each location.
"""

from __future__ import annotations

import argparse
import json

import torch

from backdoorlab.data import load_dataset
from backdoorlab.errors import BackdoorlabError
from backdoorlab.metrics import predict
from backdoorlab.attacks import backdoor_of
from backdoorlab.models import load_for
from backdoorlab.triggers import RandomPatchTrigger


def location_table(model, backdoor, x, y) -> list[dict]:
    parts = backdoor.parts
    if len(parts) < 2 or any(not isinstance(p.trigger, RandomPatchTrigger) for p in parts):
        raise BackdoorlabError("the model's sidecar records no multi-target dynamic (random-patch) backdoor")
    h, w = x.shape[-2:]
    boxes = {p.target: p.trigger.boxes(h, w) for p in parts}
    targets = torch.tensor(sorted(boxes))
    clean = predict(model, x)
    rows = []
    for p in parts:
        keep = y != p.target
        for box in boxes[p.target]:
            t = RandomPatchTrigger(p.trigger.size, [box], p.trigger.pattern, 0, p.trigger.seed)
            pred = predict(model, x[keep], transform=t.apply)
            mirror = (box[0], w - p.trigger.size - box[1])
            nearest = min(((abs(mirror[0] - b[0]) + abs(mirror[1] - b[1]), k) for k, bs in boxes.items() for b in bs))
            rows.append({"target": p.target, "location": list(box),
                         "own_target": float((pred == p.target).float().mean()),
                         "other_target": float((torch.isin(pred, targets) & (pred != p.target)).float().mean()),
                         "clean_prediction": float((pred == clean[keep]).float().mean()),
                         "mirror_nearest_target": nearest[1], "mirror_distance": nearest[0]})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("model")
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--n-images", type=int, default=2000, help="first N test images")
    args = ap.parse_args()
    try:
        ds = load_dataset(args.dataset)
        model, meta = load_for(args.model, ds)
        x, y = ds.test_x[:args.n_images], ds.test_y[:args.n_images]
        rows = location_table(model, backdoor_of(meta), x, y)
    except BackdoorlabError as e:
        ap.exit(2, f"error: {e}\n")
    print("| target | location (row, col) | to its target | to another target | clean prediction kept | "
          "mirror image nearest to (target, pixels) |\n| --- | --- | --- | --- | --- | --- |")
    for r in rows:
        print(f"| {r['target']} | {tuple(r['location'])} | {100 * r['own_target']:.1f}% | "
              f"{100 * r['other_target']:.1f}% | {100 * r['clean_prediction']:.1f}% | "
              f"{r['mirror_nearest_target']}, {r['mirror_distance']} |")
    print(json.dumps(rows))


if __name__ == "__main__":
    main()
