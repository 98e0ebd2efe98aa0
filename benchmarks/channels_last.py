"""Speed of small-cnn (MNIST, 28x28) and resnet20 (CIFAR-10, 32x32) on this CPU in the default (NCHW) and the
channels-last memory order: seconds per training step (batch 128, SGD) and per 1,000 predicted images (batches
of 256 and 1,000), best of three repeats. The numbers behind ``TrainConfig.channels_last=True`` and the
channels-last prediction path.

    OMP_NUM_THREADS=1 taskset -c 0 python benchmarks/channels_last.py [--out bench-out/channels-last]
"""

from __future__ import annotations

import argparse
import time

import torch
import torch.nn.functional as F

from common import machine, open_results

from backdoorlab.models import create_model

SHAPES = {"small-cnn": (1, 28), "resnet20": (3, 32)}


def best_of(fn, repeats: int = 3) -> float:
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        tick = time.perf_counter()
        fn()
        times.append(time.perf_counter() - tick)
    return min(times)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--out", default="bench-out/channels-last")
    ap.add_argument("--steps", type=int, default=20)
    args = ap.parse_args()
    out, results, save = open_results(args.out)
    results["machine"] = machine()
    torch.manual_seed(0)
    for arch, (c, size) in SHAPES.items():
        x, y = torch.rand(1000, c, size, size), torch.randint(0, 10, (1000,))
        for order in ("nchw", "channels-last"):
            model = create_model(arch, num_classes=10, in_channels=c, input_size=[size, size])
            fmt = torch.channels_last if order == "channels-last" else torch.contiguous_format
            model.to(memory_format=fmt)
            opt = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
            xb, yb = x[:128].contiguous(memory_format=fmt), y[:128]

            def train():
                model.train()
                for _ in range(args.steps):
                    loss = F.cross_entropy(model(xb), yb)
                    opt.zero_grad()
                    loss.backward()
                    opt.step()

            def predict(bs):
                model.eval()
                with torch.no_grad():
                    for i in range(0, len(x), bs):
                        model(x[i:i + bs].contiguous(memory_format=fmt))

            row = {"train_s_per_step": best_of(train) / args.steps,
                   "predict_s_per_1000_batch_256": best_of(lambda: predict(256)),
                   "predict_s_per_1000_batch_1000": best_of(lambda: predict(1000))}
            results[f"{arch}/{order}"] = row
            print(f"{arch:10s} {order:14s} train {row['train_s_per_step']:.4f} s/step, predict "
                  f"{row['predict_s_per_1000_batch_256']:.3f} s (batch 256) "
                  f"{row['predict_s_per_1000_batch_1000']:.3f} s (batch 1000) per 1,000 images", flush=True)
            save()


if __name__ == "__main__":
    main()
