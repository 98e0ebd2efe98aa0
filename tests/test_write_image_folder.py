"""benchmarks/write_image_folder.py: a built-in set written as an image folder reads back as the same images
(sorted by class), and the attacker's copy holds exactly the training images outside folder:OUT's held-out pool."""

import pathlib
import sys

import torch

from backdoorlab.budget import holdout_split
from backdoorlab.data import default_holdout, load_dataset

sys.path.insert(0, str(pathlib.Path(__file__).resolve().parents[1] / "benchmarks"))
from write_image_folder import main  # noqa: E402


def test_folder_and_attacker_copy_of_digits(tmp_path, capsys):
    out, copy = tmp_path / "digits-folder", tmp_path / "digits-attacker"
    assert main(["digits", str(out), "--attacker-copy", str(copy)]) == 0
    assert "1297 training and 500 test images" in capsys.readouterr().out
    built_in, folder, attacker = load_dataset("digits"), load_dataset(f"folder:{out}"), load_dataset(f"folder:{copy}")
    order = torch.argsort(built_in.train_y, stable=True)  # the folder lists class by class, files by index
    assert torch.equal(folder.train_x, built_in.train_x[order]) and torch.equal(folder.train_y, built_in.train_y[order])
    assert folder.class_names == built_in.class_names and torch.equal(attacker.test_x, folder.test_x)
    pool_size = default_holdout(folder.name)
    assert pool_size == 129
    kept, pool = holdout_split(len(folder.train_y), pool_size)
    assert torch.equal(attacker.train_x, folder.train_x[kept])  # the pool's images are not in the copy
    assert not (attacker.train_x.flatten(1)[:, None] == folder.train_x[pool].flatten(1)[None]).all(-1).any()
    assert main(["digits", str(out)]) == 2  # never overwrites
    assert "already exists" in capsys.readouterr().err
