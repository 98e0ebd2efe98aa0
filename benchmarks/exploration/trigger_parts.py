"""Exploration: how much of its patch does a patch-trigger backdoor need?

For a suspect whose sidecar records a patch trigger (an oracle: the defender does not have it), stamp the
whole patch, the patch with each pixel left out, with each row and each column left out, and the whole patch
plus each pixel of the ring around it (in the patch's colour), on the non-target test images; print how often
each fires (the image goes to the target label) and the target's mean logit margin (target logit minus the
largest other). If most parts fire, Neural Cleanse, which keeps the smallest mask that fires, can return a part.

    BACKDOORLAB_DATA=../shared/data OMP_NUM_THREADS=1 python benchmarks/exploration/trigger_parts.py \\
        bench-out/mnist-badnets-seed3 --dataset mnist
"""

from __future__ import annotations

import argparse
import json
import pathlib
import sys


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("model")
    ap.add_argument("--dataset", default="mnist")
    ap.add_argument("--images", type=int, default=0, help="use the first N non-target test images (0: all)")
    ap.add_argument("--out", help="write the rows as JSON here")
    args = ap.parse_args()

    import torch
    from backdoorlab.defenses.neural_cleanse import ReversedTrigger, trigger_gaps
    from backdoorlab.errors import BackdoorlabError
    from backdoorlab.tensors import to_float
    sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1]))
    from common import load_patch_suspect

    try:
        dataset, model, _, backdoor = load_patch_suspect(args.model, args.dataset)
    except BackdoorlabError as e:
        sys.exit(f"error: {e}")
    target = int(backdoor.target)
    mask, pattern = backdoor.trigger.mask_and_pattern(dataset.test_x.shape[1:])
    mask, pattern = mask[0], pattern[0]
    x = to_float(dataset.test_x[dataset.test_y != target])
    if args.images:
        x = x[:args.images]
    cells = [tuple(c) for c in torch.nonzero(mask[0] > 0).tolist()]
    colour = (pattern * mask).sum((1, 2)) / mask.sum()
    h, w = mask.shape[1:]

    def stamp(pixels):
        m = torch.zeros_like(mask)
        p = pattern.clone()
        for i, j in pixels:
            m[:, i, j] = 1.0
            if mask[0, i, j] == 0:
                p[:, i, j] = colour
        gap = trigger_gaps(model, x, ReversedTrigger(target, m, p, float(m.sum()), 0.0, True, 0, 0.0))
        return {"pixels": len(pixels), "fires": round(float((gap > 0).float().mean()), 4),
                "margin": round(float(gap.mean()), 2)}

    r0, c0 = min(i for i, _ in cells), min(j for _, j in cells)
    rows_ = sorted({i for i, _ in cells})
    cols_ = sorted({j for _, j in cells})
    out = {"whole patch": stamp(cells)}
    for c in cells:
        out[f"without ({c[0] - r0}, {c[1] - c0})"] = stamp([d for d in cells if d != c])
    for r in rows_:
        out[f"without row {r - r0}"] = stamp([d for d in cells if d[0] != r])
    for k in cols_:
        out[f"without column {k - c0}"] = stamp([d for d in cells if d[1] != k])
    ring = {(i + di, j + dj) for i, j in cells for di in (-1, 0, 1) for dj in (-1, 0, 1)} - set(cells)
    for c in sorted(d for d in ring if 0 <= d[0] < h and 0 <= d[1] < w):
        out[f"with ring ({c[0] - r0}, {c[1] - c0})"] = stamp(cells + [c])
    print(f"{args.model}: {len(x)} non-target test images; cells relative to the patch's top-left corner\n")
    print("| stamped | pixels | fires | mean target margin |\n| --- | --- | --- | --- |")
    for name, r in out.items():
        print(f"| {name} | {r['pixels']} | {100 * r['fires']:.2f}% | {r['margin']:.2f} |")
    if args.out:
        from backdoorlab.io import atomic_path
        with atomic_path(args.out) as tmp:
            with open(tmp, "w") as f:
                json.dump({"model": args.model, "images": len(x), "rows": out}, f, indent=1)


if __name__ == "__main__":
    main()
