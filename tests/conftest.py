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
