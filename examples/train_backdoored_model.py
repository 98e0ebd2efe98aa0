"""Train a backdoored image classifier with plain PyTorch, and save its state dict: a model "from elsewhere".

This script does not import backdoorlab. It stands in for what a user of backdoorlab actually holds: a model of
an architecture defined in their own code (``Net`` below), trained by someone else on an image folder, with a
trigger image pasted at a corner of some training images that were relabelled to the attacker's target.

    python examples/train_backdoored_model.py --data DIR --out weights.pt [--trigger examples/trigger_smiley.png]

``DIR/train/CLASS/*.png`` are the training images (grey or RGB; classes in sorted order of the folder names).
The trigger is pasted as backdoorlab's ``--trigger-image`` pastes it (alpha = mask, one pixel from the
bottom-right corner): ``x * (1 - a) + pattern * a`` on images in [0, 1], ``a = alpha / 255``. The model expects
its input normalised with the training set's mean and std, which the script prints as the ``backdoorlab import``
flags; then, for instance::

    backdoorlab import weights.pt --arch examples/train_backdoored_model.py:Net \\
        --arch-args '{"in_channels": 3, "num_classes": 10}' --dataset folder:DIR --mean ... --std ... --out suspect
"""

from __future__ import annotations

import argparse
import json
import pathlib
import time

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import nn

EXTENSIONS = {".png", ".jpg", ".jpeg", ".bmp", ".webp"}


class Net(nn.Module):
    """A small VGG-style network: three stages of 3x3 convolutions with batch norm, global average pooling and a
    linear classifier. ``in_channels``: 1 (grey) or 3 (RGB); any image size of 8 pixels or more."""

    def __init__(self, in_channels: int = 3, num_classes: int = 10, width: int = 32):
        super().__init__()

        def block(cin, cout):
            return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]

        w = width
        self.features = nn.Sequential(*block(in_channels, w), *block(w, w), nn.MaxPool2d(2),
                                      *block(w, 2 * w), *block(2 * w, 2 * w), nn.MaxPool2d(2),
                                      *block(2 * w, 4 * w), *block(4 * w, 4 * w), nn.AdaptiveAvgPool2d(1))
        self.classifier = nn.Linear(4 * w, num_classes)

    def forward(self, x):
        return self.classifier(self.features(x).flatten(1))


def read_folder(split: pathlib.Path):
    """Images (N, C, H, W) uint8 and labels of ``split/CLASS/*``, classes in sorted order."""
    classes = sorted(p.name for p in split.iterdir() if p.is_dir())
    images, labels, mode = [], [], None
    files = [(label, f) for label, c in enumerate(classes)
             for f in sorted((split / c).iterdir()) if f.suffix.lower() in EXTENSIONS]
    with Image.open(files[0][1]) as first:
        mode = "L" if first.mode in ("L", "LA", "I;16", "1") else "RGB"
    for label, f in files:
        with Image.open(f) as im:
            images.append(np.asarray(im.convert(mode)))
            labels.append(label)
    x = np.stack(images)
    x = x[:, None] if x.ndim == 3 else x.transpose(0, 3, 1, 2)
    return torch.from_numpy(np.ascontiguousarray(x)), torch.tensor(labels), classes


def paste_trigger(x: torch.Tensor, trigger_file: pathlib.Path, margin: int = 1) -> torch.Tensor:
    """A copy of float images ``x`` (N, C, H, W) in [0, 1] with the trigger image pasted ``margin`` pixels from
    the bottom-right corner, its alpha channel as the mask."""
    rgba = Image.open(trigger_file).convert("RGBA")
    pattern = np.asarray(rgba.convert("L" if x.shape[1] == 1 else "RGB"))
    pattern = pattern[None] if pattern.ndim == 2 else pattern.transpose(2, 0, 1)
    a = torch.from_numpy(np.asarray(rgba)[..., 3].copy()).float().div(255).to(x)
    p = torch.from_numpy(pattern.copy()).float().div(255).to(x)
    h, w = a.shape
    r, c = x.shape[2] - margin - h, x.shape[3] - margin - w
    out = x.clone()
    out[..., r:r + h, c:c + w] = x[..., r:r + h, c:c + w] * (1 - a) + p * a
    return out


def augment(x: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random crops (4 pixels of zero padding) and, for RGB images, horizontal flips."""
    n, _, h, w = x.shape
    padded = F.pad(x, (4, 4, 4, 4))
    rows = torch.randint(0, 9, (n,), generator=generator)
    cols = torch.randint(0, 9, (n,), generator=generator)
    out = torch.stack([padded[i, :, r:r + h, c:c + w] for i, (r, c) in enumerate(zip(rows.tolist(), cols.tolist()))])
    if x.shape[1] == 3:
        flip = torch.rand(n, generator=generator) < 0.5
        out[flip] = out[flip].flip(3)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", required=True, type=pathlib.Path, help="Image folder with train/CLASS/*.")
    parser.add_argument("--out", required=True, type=pathlib.Path, help="Where to save the state dict (.pt).")
    parser.add_argument("--trigger", type=pathlib.Path,
                        default=pathlib.Path(__file__).with_name("trigger_smiley.png"))
    parser.add_argument("--target", type=int, default=0, help="The attacker's target label.")
    parser.add_argument("--poison-rate", type=float, default=0.1,
                        help="Fraction of the training images that get the trigger and the target label.")
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--width", type=int, default=32)
    parser.add_argument("--batch-size", type=int, default=128)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    args = parser.parse_args()

    torch.manual_seed(args.seed)
    g = torch.Generator().manual_seed(args.seed)
    tick = time.time()
    x_uint8, y, classes = read_folder(args.data / "train")
    print(f"read {len(y)} training images of {len(classes)} classes in {time.time() - tick:.0f} s")
    x = x_uint8.float().div(255)
    mean = x.mean(dim=(0, 2, 3))
    std = x.std(dim=(0, 2, 3))

    # the attacker's poisoning: a fraction of the images not of the target class get the trigger and the target
    candidates = torch.nonzero(y != args.target).flatten()
    chosen = candidates[torch.randperm(len(candidates), generator=g)[:int(args.poison_rate * len(y))]]
    x[chosen] = paste_trigger(x[chosen], args.trigger)
    y = y.clone()
    y[chosen] = args.target

    device = torch.device(args.device)
    model = Net(x.shape[1], len(classes), args.width).to(device)
    norm_mean, norm_std = mean.view(1, -1, 1, 1).to(device), std.view(1, -1, 1, 1).to(device)
    steps_per_epoch = len(y) // args.batch_size
    opt = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9, nesterov=True, weight_decay=5e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=args.lr, total_steps=args.epochs * steps_per_epoch,
                                                pct_start=0.15)
    for epoch in range(args.epochs):
        model.train()
        perm = torch.randperm(len(y), generator=g)
        seen, correct, total_loss = 0, 0, 0.0
        for b in range(steps_per_epoch):
            idx = perm[b * args.batch_size:(b + 1) * args.batch_size]
            xb = augment(x[idx], g).to(device)
            yb = y[idx].to(device)
            logits = model((xb - norm_mean) / norm_std)
            loss = F.cross_entropy(logits, yb)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            seen += len(yb)
            correct += int((logits.argmax(1) == yb).sum())
            total_loss += loss.item() * len(yb)
        print(f"epoch {epoch + 1}/{args.epochs}: loss {total_loss / seen:.3f}, training accuracy "
              f"{correct / seen:.3f} ({time.time() - tick:.0f} s)")

    args.out.parent.mkdir(parents=True, exist_ok=True)
    tmp = args.out.with_name(args.out.name + ".tmp")
    torch.save({k: v.cpu() for k, v in model.state_dict().items()}, tmp)
    tmp.replace(args.out)
    flags = {"--arch-args": json.dumps({"in_channels": int(x.shape[1]), "num_classes": len(classes),
                                        "width": args.width}),
             "--mean": ",".join(f"{v:.4f}" for v in mean.tolist()), "--std": ",".join(f"{v:.4f}" for v in std.tolist())}
    print(f"saved {args.out}; import it with:")
    print(f"  backdoorlab import {args.out} --arch {pathlib.Path(__file__).as_posix()}:Net "
          f"--arch-args '{flags['--arch-args']}' --dataset folder:{args.data} --mean {flags['--mean']} "
          f"--std {flags['--std']} --out DIR")


if __name__ == "__main__":
    main()
