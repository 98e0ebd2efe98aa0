"""The data set registry: every data set declares its traits where its loader is defined, the accessors give what
the tables they replaced gave (written out here as they were), and a data set registered elsewhere (here, by a
test) is listed, loaded and answered for like the built-in ones."""

import os
import subprocess
import sys

import numpy as np
import pytest

import backdoorlab
from backdoorlab import augment, budget
from backdoorlab.augment import AUGMENTATIONS
from backdoorlab.config import Config
from backdoorlab.data import (DATASETS, dataset_entry, default_arch, default_holdout, downloadable_datasets,
                              list_datasets, load_dataset, sanitizer_augmentation, training_augmentation,
                              training_recipe)
from backdoorlab.data import download as dl
from backdoorlab.data.datasets import make_dataset
from backdoorlab.data.registry import DatasetOptions, path_families
from backdoorlab.errors import BackdoorlabError
from backdoorlab.models import list_models
from backdoorlab.train import TrainConfig

BUILT_IN = ["cifar10", "digits", "fashion-mnist", "mnist"]
FAMILIES = ["folder", "npz"]  # read from a path, named FAMILY:PATH (tests/test_folder_data.py, test_npz_data.py)

# The tables the registry replaced, as they were (pipeline.TRAIN_DEFAULTS and train_defaults, budget's
# DEFAULT_HOLDOUT, augment.sanitizer_augmentation, pipeline.default_repair_options' training augmentation).
OLD_TRAIN_DEFAULTS = {
    ("mnist", "small-cnn"): dict(epochs=3, lr=0.05, batch_size=128),
    ("fashion-mnist", "small-cnn"): dict(epochs=5, lr=0.05, batch_size=128),
    ("digits", "small-cnn"): dict(epochs=40, lr=0.05, batch_size=64),
    ("cifar10", "*"): dict(epochs=20, lr=0.1, batch_size=128, augment="crop-flip-jpeg", channels_last=True),
}


def old_train_defaults(dataset, arch):
    return dict(OLD_TRAIN_DEFAULTS.get((dataset, arch)) or OLD_TRAIN_DEFAULTS.get((dataset, "*")) or
                dict(epochs=10, lr=0.05, batch_size=128))


def old_default_holdout(dataset):
    return {"digits": 400}.get(dataset, 5000)


def old_sanitizer_augmentation(dataset):
    return "crop-flip-jpeg" if dataset == "cifar10" else "affine"


def old_training_augmentation(dataset):
    return OLD_TRAIN_DEFAULTS.get((dataset, "*"), {}).get("augment", "none")


NAMES = BUILT_IN + ["imagenet"]  # and a name no data set has: the defaults, as before
ARCHS = sorted(set(list_models()) | {"small-cnn", "resnet20", "no-such-arch"})


def test_the_built_in_data_sets_are_registered_and_listed_sorted():
    assert list_datasets() == BUILT_IN
    assert sorted(DATASETS) == sorted(BUILT_IN + FAMILIES)
    assert path_families() == FAMILIES
    assert downloadable_datasets() == ["cifar10", "fashion-mnist", "mnist"]


@pytest.mark.parametrize("name", BUILT_IN + FAMILIES)
def test_every_data_set_declares_its_traits(name):
    e = dataset_entry(name)
    assert e.name == name and callable(e.run)
    assert e.description and "\n" not in e.description and e.description.endswith(".")
    assert issubclass(e.config, Config) and issubclass(e.config, DatasetOptions)
    assert set(e.traits) == set(DATASETS.traits)
    assert isinstance(e.traits["holdout"], int) and e.traits["holdout"] > 0
    assert e.traits["arch"] in list_models()
    assert training_augmentation(name) in AUGMENTATIONS and sanitizer_augmentation(name) in AUGMENTATIONS
    for arch in ARCHS:  # every recipe is a valid training configuration
        recipe = training_recipe(name, arch)
        assert {"epochs", "lr", "batch_size"} <= set(recipe)
        TrainConfig(**recipe)
    assert bool(e.traits["mirrors"]) == bool(e.traits["md5"])  # a downloaded data set names its files' MD5s
    assert all(url.endswith("/") for url in e.traits["mirrors"])


@pytest.mark.parametrize("name", NAMES)
def test_accessors_give_what_the_replaced_tables_gave(name):
    for arch in ARCHS:
        assert training_recipe(name, arch) == old_train_defaults(name, arch), (name, arch)
    assert default_holdout(name) == budget.default_holdout(name) == old_default_holdout(name)
    assert sanitizer_augmentation(name) == augment.sanitizer_augmentation(name) == old_sanitizer_augmentation(name)
    assert training_augmentation(name) == old_training_augmentation(name)


def test_default_architectures_and_a_recipe_is_a_fresh_dict():
    assert {n: default_arch(n) for n in BUILT_IN} == {"cifar10": "resnet20", "digits": "small-cnn",
                                                       "fashion-mnist": "small-cnn", "mnist": "small-cnn"}
    recipe = training_recipe("cifar10", "resnet20")
    recipe["epochs"] = 1
    assert training_recipe("cifar10", "resnet20")["epochs"] == 20


def test_unknown_data_set_is_one_line_listing_the_valid_ones():
    want = "unknown dataset 'imagenet'; valid: 'cifar10', 'digits', 'fashion-mnist', 'mnist', folder:PATH, npz:PATH, any of them as NAME[CLASSES]"
    for call in (lambda: dataset_entry("imagenet"), lambda: load_dataset("imagenet")):
        with pytest.raises(BackdoorlabError) as info:
            call()
        assert str(info.value) == want


def test_download_tables_are_the_registered_traits():
    assert sorted(dl.MD5) == sorted(dl.MIRRORS) == downloadable_datasets()
    for name in downloadable_datasets():
        assert dl.MD5[name] is dataset_entry(name).traits["md5"]
        assert list(dl.MIRRORS[name]) == list(dataset_entry(name).traits["mirrors"])
    assert "digits" not in dl.MD5 and "imagenet" not in dl.MIRRORS
    with pytest.raises(KeyError):
        dl.MD5["digits"]


# ------------------------------------------------------------------- a data set registered from outside


@pytest.fixture
def letters():
    """A tiny fake data set, registered for the test and removed after it."""
    calls = []

    def load_letters(data_dir, download, progress):
        calls.append((data_dir, download, progress))
        rng = np.random.default_rng(0)
        return make_dataset("letters", rng.integers(0, 256, (30, 1, 4, 4), dtype=np.uint8), np.arange(30) % 3,
                            rng.integers(0, 256, (6, 1, 4, 4), dtype=np.uint8), np.arange(6) % 3, ["a", "b", "c"])

    DATASETS.register("letters", DatasetOptions, "Three letters, 4x4 greyscale: a test's data set.", holdout=9,
                      arch="resnet20", recipe=dict(epochs=2, lr=0.2, batch_size=8),
                      arch_recipes={"small-cnn": dict(epochs=4)}, sanitizer_augment="crop",
                      mirrors=("http://example.invalid/letters/",), md5={"letters.bin": "0" * 32})(load_letters)
    try:
        yield calls
    finally:
        DATASETS.unregister("letters")


def test_a_registered_data_set_is_listed_loaded_and_answered_for(letters, tmp_path):
    assert list_datasets() == ["cifar10", "digits", "fashion-mnist", "letters", "mnist"]
    ds = load_dataset("letters", data_dir=tmp_path, download=False, progress=False)
    assert letters == [(tmp_path, False, False)]
    assert ds.name == "letters" and ds.train_x.shape == (30, 1, 4, 4) and ds.num_classes == 3
    assert default_holdout("letters") == budget.default_holdout("letters") == 9
    assert len(budget.clean_budget(ds, 9)) == 9  # the pool is the declared size
    with pytest.raises(BackdoorlabError, match="larger than the held-out pool of 9"):
        budget.clean_budget(ds, 10)
    assert default_arch("letters") == "resnet20"
    assert training_recipe("letters", "resnet20") == dict(epochs=2, lr=0.2, batch_size=8)
    assert training_recipe("letters", "small-cnn") == dict(epochs=4, lr=0.2, batch_size=8)
    assert training_augmentation("letters") == "none" and augment.sanitizer_augmentation("letters") == "crop"
    assert "letters" in downloadable_datasets() and dl.MD5["letters"] == {"letters.bin": "0" * 32}
    assert dl.mirror_urls("letters", "letters.bin", mirror="") == ["http://example.invalid/letters/letters.bin"]


def test_a_data_set_registered_by_a_test_is_gone_after_it():
    assert list_datasets() == BUILT_IN and "letters" not in dl.MD5
    assert default_holdout("letters") == 5000  # an unregistered name gets the defaults
    with pytest.raises(BackdoorlabError, match="^unknown dataset 'letters'; valid: "):
        DATASETS.unregister("letters")


def test_a_name_registered_twice_is_refused():
    with pytest.raises(ValueError, match="registered twice"):
        DATASETS.register("mnist", DatasetOptions, "Again.")(lambda data_dir, download, progress: None)
    assert dataset_entry("mnist").traits["arch_recipes"] == {"small-cnn": dict(epochs=3, lr=0.05, batch_size=128)}


def test_importing_any_module_that_asks_the_registry_registers_every_data_set():
    """The data package imports every module in it; a module that reads a trait needs no import of its own."""
    code = ("from backdoorlab.budget import default_holdout; from backdoorlab.data.registry import DATASETS; "
            "print(default_holdout('digits'), sorted(DATASETS))")
    src = os.path.dirname(os.path.dirname(backdoorlab.__file__))  # this checkout's package, in a fresh process
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [src, os.environ.get("PYTHONPATH")]))}
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env).stdout
    assert out.split("\n")[0] == "400 " + str(sorted(BUILT_IN + FAMILIES))
