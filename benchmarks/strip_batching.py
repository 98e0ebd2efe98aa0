"""STRIP's speed by batch size on one model: overlaid images a second for the default (sized for the device),
20 inputs a pass (the former default) and 1 input a pass.

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/strip_batching.py bench-out/suspects/mnist-badnets --dataset mnist
"""

from __future__ import annotations

import argparse
import sys
import time
import pathlib

import torch

sys.path.insert(0, str(pathlib.Path(__file__).parent))
from common import machine  # noqa: E402

from backdoorlab import load_checkpoint, load_dataset  # noqa: E402
from backdoorlab.detectors.strip import StripConfig, strip_entropy  # noqa: E402


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("model_dir")
    ap.add_argument("--dataset", required=True)
    ap.add_argument("--inputs", type=int, default=1000, help="Test images to score.")
    args = ap.parse_args()
    ds = load_dataset(args.dataset)
    model, _ = load_checkpoint(args.model_dir)
    x, overlays = ds.test_x[:args.inputs], ds.train_x[-2000:]
    print(machine())
    strip_entropy(model, x[:50], overlays, StripConfig())  # warm-up: the first passes pay one-off costs
    for batch_size in (None, 20, 1):
        cfg = StripConfig(batch_size=batch_size)
        tick = time.time()
        strip_entropy(model, x, overlays, cfg)
        seconds = time.time() - tick
        print(f"batch_size={batch_size}: {len(x) * cfg.n_overlays / seconds:,.0f} overlaid images/s")


if __name__ == "__main__":
    main()
