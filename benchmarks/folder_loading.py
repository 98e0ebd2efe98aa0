"""How long ``load_dataset("folder:PATH")`` takes on a folder of 50,000 32x32 PNGs (CIFAR-10's training set,
written by write_image_folder.py as PATH/CLASS/NNNNN.png in a temporary folder, or any folder given), on one
core: run it pinned, as docs/results.md records it::

    OMP_NUM_THREADS=1 taskset -c 0 env PYTHONPATH=src python benchmarks/folder_loading.py [--folder DIR]

Prints the time of each of ``--repeats`` loads (the file system cache is warm after the first) and the machine.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import warnings
from pathlib import Path

import torch

from backdoorlab.data import load_dataset

sys.path.insert(0, str(Path(__file__).resolve().parent))
from common import machine  # noqa: E402
from write_image_folder import write_split  # noqa: E402


def time_loads(folder: Path, repeats: int) -> list[float]:
    """Seconds of each of ``repeats`` loads of ``folder:folder``; prints what was loaded."""
    seconds = []
    for _ in range(repeats):
        start = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            ds = load_dataset(f"folder:{folder}")
        seconds.append(time.perf_counter() - start)
        print(f"  {len(ds.train_y) + len(ds.test_y)} images ({len(ds.train_y)} train, {len(ds.test_y)} test), "
              f"{ds.in_channels}x{ds.image_size[0]}x{ds.image_size[1]}: {seconds[-1]:.2f} s", flush=True)
    return seconds


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--folder", type=Path, default=None, help="a folder to load (default: CIFAR-10's training "
                                                                  "set written to a temporary folder)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--data-dir", default=None, help="where CIFAR-10 is (default $BACKDOORLAB_DATA)")
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory() as tmp:
        folder = args.folder
        if folder is None:
            folder = Path(tmp) / "cifar10-train"
            ds = load_dataset("cifar10", args.data_dir, download=False, progress=False)
            write_split(folder, ds.train_x, ds.train_y, ds.class_names)
            print(f"wrote {len(ds.train_y)} PNGs to {folder}")
        seconds = time_loads(folder.resolve(), args.repeats)
    print(f"median {statistics.median(seconds):.2f} s, first {seconds[0]:.2f} s; {machine()}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
