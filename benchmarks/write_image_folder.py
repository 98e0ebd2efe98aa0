"""Write a built-in data set as an image folder that ``--dataset folder:OUT`` reads back: ``OUT/train/CLASS/
NNNNN.png`` and ``OUT/test/CLASS/NNNNN.png`` (CLASS: the data set's class name, a ``/`` in it written ``-``;
NNNNN: the image's index in its split of the built-in set), from $BACKDOORLAB_DATA (or --data-dir).

``--attacker-copy DIR`` also writes ``DIR/train/...`` with only the training images that backdoorlab does NOT
put in the held-out clean pool of ``folder:OUT``, and ``DIR/test/...`` with the same test set: a model trained
elsewhere on DIR has never seen the images a defender's clean budget is drawn from. Which images those are is
asked of the library (the folder's listing order and its held-out pool), not recomputed here.

``--upscale K`` writes every image K times larger (Pillow's bicubic filter), a data set whose pipeline must shrink
it again (the image-scaling backdoor, docs/attacks.md); ``--limit TRAIN,TEST`` writes only the first TRAIN
training and TEST test images.

Each folder is written under a temporary name beside it and renamed when complete; an existing OUT or DIR is
an error (nothing is overwritten).

    PYTHONPATH=src python benchmarks/write_image_folder.py cifar10 /work/bench-data/cifar10-folder \
        --attacker-copy /work/bench-data/cifar10-attacker
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import time
from pathlib import Path

import numpy as np

from backdoorlab.budget import holdout_split
from backdoorlab.data import load_dataset
from backdoorlab.data.image_files import class_folders, list_split
from backdoorlab.data.user_traits import user_holdout
from backdoorlab.errors import BackdoorlabError

BUILT_IN = ("cifar10", "mnist", "fashion-mnist", "digits")  # digits: bundled, small, for the tests


def folder_name(class_name: str) -> str:
    """A class name as a folder name: path separators become ``-``."""
    return class_name.replace("/", "-").replace(os.sep, "-")


def write_png(array: np.ndarray, path: Path, upscale: int = 1) -> None:
    """Write a uint8 (C, H, W) image (C = 1 or 3) as a PNG, ``upscale`` times larger (bicubic) when above 1."""
    from PIL import Image

    image = Image.fromarray(array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0))
    if upscale > 1:
        image = image.resize((image.width * upscale, image.height * upscale), Image.Resampling.BICUBIC)
    image.save(path, format="PNG")


def write_split(root: Path, x, y, class_names: list[str], upscale: int = 1) -> None:
    """Write images ``x`` (uint8 tensor (N, C, H, W)) with labels ``y`` as ``root/CLASS/NNNNN.png``."""
    folders = [folder_name(c) for c in class_names]
    for name in folders:
        (root / name).mkdir(parents=True)
    images, labels = x.numpy(), y.tolist()
    for i, label in enumerate(labels):
        write_png(images[i], root / folders[label] / f"{i:05d}.png", upscale)


def fresh_partial(out: Path) -> Path:
    """The temporary folder ``out`` is written in (removed first if a crashed run left it); ``out`` must not
    exist."""
    if out.exists():
        raise BackdoorlabError(f"{out} already exists; remove it or choose another folder")
    partial = out.with_name(out.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    return partial


def write_attacker_copy(folder: Path, out: Path) -> int:
    """Copy ``folder``'s test set and the training images outside ``folder:``'s held-out pool to ``out``;
    the number of training images copied."""
    partial = fresh_partial(out)
    shutil.copytree(folder / "test", partial / "test")
    root = folder / "train"
    paths, _ = list_split(root, class_folders(root))
    train_idx, _ = holdout_split(len(paths), user_holdout(len(paths)))
    for i in train_idx.tolist():
        target = partial / "train" / paths[i].relative_to(root)
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(paths[i], target)
    partial.rename(out)
    return len(train_idx)


def parse_limit(text: str | None) -> tuple[int | None, int | None]:
    """``--limit TRAIN,TEST`` as two positive counts; (None, None) without it."""
    if text is None:
        return None, None
    try:
        n_train, n_test = (int(v) for v in text.split(","))
    except ValueError:
        n_train = n_test = 0
    if n_train < 1 or n_test < 1:
        raise BackdoorlabError(f"--limit must be TRAIN,TEST (two positive counts), got {text!r}")
    return n_train, n_test


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("dataset", choices=BUILT_IN)
    parser.add_argument("out", type=Path, help="the folder to write (must not exist)")
    parser.add_argument("--attacker-copy", type=Path, default=None, metavar="DIR",
                        help="also write DIR: the training images outside folder:OUT's held-out pool, and the test set")
    parser.add_argument("--data-dir", default=None, help="where the built-in data set is (default $BACKDOORLAB_DATA)")
    parser.add_argument("--upscale", type=int, default=1, metavar="K", help="write the images K times larger (bicubic)")
    parser.add_argument("--limit", default=None, metavar="TRAIN,TEST",
                        help="write only the first TRAIN training and TEST test images")
    args = parser.parse_args(argv)
    try:
        out = args.out.expanduser().resolve()
        partial = fresh_partial(out)
        if args.attacker_copy is not None:
            fresh_partial(args.attacker_copy.expanduser().resolve())  # refuse before the long write
        if args.upscale < 1:
            raise BackdoorlabError(f"--upscale must be a positive integer, got {args.upscale}")
        n_train, n_test = parse_limit(args.limit)
        ds = load_dataset(args.dataset, args.data_dir, download=False, progress=False)
        start = time.perf_counter()
        write_split(partial / "train", ds.train_x[:n_train], ds.train_y[:n_train], ds.class_names, args.upscale)
        write_split(partial / "test", ds.test_x[:n_test], ds.test_y[:n_test], ds.class_names, args.upscale)
        partial.rename(out)
        print(f"{out}: {len(ds.train_y[:n_train])} training and {len(ds.test_y[:n_test])} test images of {args.dataset} "
              f"in {time.perf_counter() - start:.1f} s")
        if args.attacker_copy is not None:
            copy = args.attacker_copy.expanduser().resolve()
            kept = write_attacker_copy(out, copy)
            print(f"{copy}: {kept} training images (the {len(ds.train_y) - kept} of folder:{out}'s held-out pool "
                  f"left out) and the {len(ds.test_y)} test images")
    except BackdoorlabError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
