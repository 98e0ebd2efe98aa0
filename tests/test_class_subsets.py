"""Class subsets NAME[CLASSES]: relabelled images, canonical names, the base's held-out pool restricted to the
classes, the sidecar record, and one-line errors."""

import pytest
import torch

from backdoorlab.budget import clean_budget, holdout_split, training_part
from backdoorlab.cli import main
from backdoorlab.data import default_holdout, load_dataset
from backdoorlab.data.registry import canonical_name
from backdoorlab.errors import BackdoorlabError


@pytest.fixture(scope="module")
def lower(digits):
    return load_dataset("digits[0-4]")


@pytest.mark.parametrize("name, canonical", [("digits[4,3,2,1,0]", "digits[0-4]"), ("digits[0,1,8,9]", "digits[0,1,8,9]"),
                                             ("digits[5-7,0]", "digits[0,5-7]"), ("digits[1, 2]", "digits[1,2]"),
                                             ("digits", "digits")])
def test_canonical_names(name, canonical):
    assert canonical_name(name) == canonical


def test_subset_relabels_and_keeps_names(digits, lower):
    upper = load_dataset("digits[5-9]")
    assert lower.name == "digits[0-4]" and lower.class_names == ["0", "1", "2", "3", "4"]
    assert upper.class_names == ["5", "6", "7", "8", "9"]
    for ds, offset in ((lower, 0), (upper, 5)):
        keep = (digits.test_y >= offset) & (digits.test_y < offset + 5)
        assert torch.equal(ds.test_x, digits.test_x[keep]) and torch.equal(ds.test_y, digits.test_y[keep] - offset)
    assert len(lower.train_y) + len(upper.train_y) == len(digits.train_y)
    assert lower.source["kind"] == "subset" and lower.source["of"] == "digits" and lower.parent is digits or \
        lower.parent.name == "digits"


def test_subset_pool_is_the_base_pool_of_its_classes(digits, lower):
    _, base_pool = holdout_split(len(digits.train_y), default_holdout("digits"))
    base_pool = base_pool[digits.train_y[base_pool] < 5]
    assert default_holdout(lower.name) == len(base_pool) == lower.source["holdout"]
    _, pool = holdout_split(len(lower.train_y), default_holdout(lower.name))
    assert torch.equal(lower.train_x[pool], digits.train_x[base_pool])
    x, y = training_part(lower)  # what a model of the subset trains on: the base's training part, in its order
    bx, by = training_part(digits)
    assert torch.equal(x, bx[by < 5]) and torch.equal(y, by[by < 5])
    budget = clean_budget(lower, 100, seed=3)  # every budget image is a pool image of the base
    pool_images = {bytes(digits.train_x[i].numpy()) for i in base_pool}
    assert all(bytes(img.numpy()) in pool_images for img in budget.x)


def test_a_subset_model_records_its_data_set(tmp_path, capsys):
    out = tmp_path / "m"
    assert main(["train", "--dataset", "digits[8,7,3]", "--arch", "small-cnn", "--epochs", "2", "--out", str(out),
                 "--no-progress", "--json"]) == 0
    capsys.readouterr()
    import json
    meta = json.loads((out / "model.json").read_text())
    assert meta["dataset"] == "digits[3,7,8]" and meta["class_names"] == ["3", "7", "8"]
    assert meta["data_source"]["classes"] == [3, 7, 8] and meta["holdout"]["size"] == meta["data_source"]["holdout"]
    assert meta["arch_args"]["num_classes"] == 3
    assert main(["evaluate", str(out), "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["n_test"] == meta["data_source"]["images"]["test"]
    assert main(["scan", str(out), "--dataset", "digits[3, 7,8]", "--clean-budget", "40", "--no-strip",
                 "-o", "epochs=1", "-o", "batch_size=20", "--no-progress", "--json"]) == 0


@pytest.mark.parametrize("name, msg", [
    ("digits[3]", "at least two classes"), ("digits[0-12]", "digits has no class 10"),
    ("digits[a]", "label indices or ranges"), ("digits[4-2]", "not a range"),
    ("digits[0-4][1,2]", "a class subset of a class subset"), ("nope[0-3]", "unknown dataset 'nope'"),
])
def test_subset_errors_are_one_line(name, msg, capsys):
    with pytest.raises(BackdoorlabError, match=msg.replace("[", r"\[")):
        load_dataset(name)
    assert main(["train", "--dataset", name, "--arch", "small-cnn", "--out", "/nonexistent/x"]) == 2
    err = capsys.readouterr().err
    assert msg in err and len(err.strip().splitlines()) == 1
