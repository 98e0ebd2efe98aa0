"""How much of a patch trigger each test image can still see, and the ASR at each level.

    BACKDOORLAB_DATA=../shared/data python benchmarks/exploration/trigger_visibility.py MODEL_DIR... \
        [--dataset D] [--first N]

A white patch stamped on a corner that is already white changes nothing, so no model can tell the triggered image
from the clean one there. For each model (its backdoor read from the sidecar) this stamps the trigger on every
ASR-eligible test image, measures how much the stamp changed the image (the largest change of any pixel value,
on the 0-1 scale), and prints the share of images and the model's ASR in each band of that change. ``--first N``
also splits the test set into its first N images and the rest (the shared CIFAR-10 copy: the first 1,000 test
images are pixel-exact, the other 9,000 were decoded from JPEG copies; see ../shared/data/README.md).
"""

from __future__ import annotations

import argparse

import torch

from backdoorlab.data import load_dataset
from backdoorlab.errors import BackdoorlabError
from backdoorlab.metrics import predict
from backdoorlab.attacks import backdoor_of
from backdoorlab.models import load_for
from backdoorlab.tensors import to_float

BANDS = [(0.0, 0.02), (0.02, 0.05), (0.05, 0.1), (0.1, float("inf"))]


def largest_change(x: torch.Tensor, trigger, batch_size: int = 1000) -> torch.Tensor:
    """Per image, the largest absolute change of any value that stamping ``trigger`` makes (0-1 scale)."""
    out = []
    for i in range(0, len(x), batch_size):
        xb = to_float(x[i:i + batch_size])
        out.append((trigger.apply(xb) - xb).abs().flatten(1).amax(1))
    return torch.cat(out) if out else torch.empty(0)


def visibility(model, backdoor, x, y, num_classes: int) -> list[dict]:
    """Rows per band of the trigger's largest change: share of eligible images, and ASR among them."""
    if backdoor is None or not hasattr(backdoor, "trigger") or not hasattr(backdoor.trigger, "apply"):
        raise BackdoorlabError("the model's sidecar records no backdoor with a trigger")
    keep = backdoor.eligible(y)
    x, y = x[keep], y[keep]
    hit = predict(model, x, transform=backdoor.trigger.apply) == backdoor.target_labels(y, num_classes)
    change = largest_change(x, backdoor.trigger)
    rows = []
    for lo, hi in BANDS:
        m = (change >= lo) & (change < hi)
        rows.append({"band": (lo, hi), "share": int(m.sum()) / len(m), "n": int(m.sum()),
                     "asr": int(hit[m].sum()) / int(m.sum()) if int(m.sum()) else float("nan")})
    rows.append({"band": None, "share": 1.0, "n": len(hit), "asr": int(hit.sum()) / len(hit)})
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("models", nargs="+")
    ap.add_argument("--dataset", default="cifar10")
    ap.add_argument("--first", type=int, default=0, help="also split the test set at this index (0: no split)")
    args = ap.parse_args()
    try:
        ds = load_dataset(args.dataset)
        parts = [("all test images", slice(None))]
        if args.first:
            if not 0 < args.first < len(ds.test_y):
                raise BackdoorlabError(f"--first must lie in 1..{len(ds.test_y) - 1}, got {args.first}")
            parts += [(f"first {args.first}", slice(0, args.first)), (f"the other {len(ds.test_y) - args.first}",
                                                                      slice(args.first, None))]
        for path in args.models:
            model, meta = load_for(path, ds)
            print(f"## {path}")
            print("| test images | largest change by the trigger | share of eligible images | ASR |\n"
                  "| --- | --- | --- | --- |")
            for name, sl in parts:
                for r in visibility(model, backdoor_of(meta), ds.test_x[sl], ds.test_y[sl], ds.num_classes):
                    band = "any" if r["band"] is None else (
                        f">= {r['band'][0]:g}" if r["band"][1] == float("inf") else
                        f"{r['band'][0]:g} - {r['band'][1]:g}")
                    print(f"| {name} | {band} | {100 * r['share']:.2f}% ({r['n']}) | {100 * r['asr']:.2f}% |")
    except BackdoorlabError as e:
        ap.exit(2, f"error: {e}\n")


if __name__ == "__main__":
    main()
