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
