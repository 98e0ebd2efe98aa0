import os
from pathlib import Path

import pytest

IDX_NAMES = ["train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz", "t10k-images-idx3-ubyte.gz",
             "t10k-labels-idx1-ubyte.gz"]


def shared_data(*files: str) -> Path:
    """The real data directory from env BACKDOORLAB_DATA; skips the test if it is unset or lacks ``files``."""
    root = os.environ.get("BACKDOORLAB_DATA")
    if not root:
        pytest.skip("BACKDOORLAB_DATA is not set (it should point at the real data sets)")
    missing = [f for f in files if not (Path(root) / f).is_file()]
    if missing:
        pytest.skip(f"real data missing under {root}: {', '.join(missing)}")
    return Path(root)


@pytest.fixture(scope="module")
def digits():
    """scikit-learn's bundled 8x8 digits (no files needed), loaded once per test module."""
    from backdoorlab.data import load_dataset
    return load_dataset("digits")


def train_badnets_suspect(dataset, out):
    """A small-cnn with the default BadNets backdoor (target 0, 10% poisoned, seed 1) trained with the data set's
    recipe and saved to ``out``: the suspect the defenses' tests repair. Returns ``(model, meta)``."""
    from backdoorlab.attacks import make_poisoning_attack
    from backdoorlab.runs import train_defaults, train_run
    from backdoorlab.train import TrainConfig

    attack = make_poisoning_attack("badnets", target=0, poison_rate=0.1)
    cfg = TrainConfig(seed=1, **train_defaults(dataset.name, "small-cnn"))
    return train_run(dataset, "small-cnn", cfg, attack, out=str(out), progress=False)


@pytest.fixture(scope="module")
def digits_suspect(digits, tmp_path_factory):
    """:func:`train_badnets_suspect` on the digits, once per test module: ``(model in eval mode, meta, its
    directory)``."""
    out = tmp_path_factory.mktemp("suspect") / "badnets"
    model, meta = train_badnets_suspect(digits, out)
    return model.eval(), meta, out


@pytest.fixture(scope="module")
def digits_budget(digits):
    """A clean budget of 300 digits (seed 0)."""
    from backdoorlab.budget import clean_budget
    return clean_budget(digits, 300, seed=0)


def state_of(model) -> dict:
    """A copy of ``model``'s state dict, to compare models by value."""
    return {k: v.clone() for k, v in model.state_dict().items()}


def same_state(a: dict, b: dict) -> bool:
    """Whether two :func:`state_of` copies hold the same keys and bit-identical tensors."""
    import torch
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
