"""Tests for backdoorlab.data: loaders on the real files, corrupt-file errors, digits, data-dir resolution.

Tests on the real data need env BACKDOORLAB_DATA (the layout of shared/data) and skip without it; the
corrupt-file tests build their own small files in tmp_path.
"""

import gzip
import io
import os
import pickle
import tarfile
import warnings
from pathlib import Path

import numpy as np
import pytest
import torch

from backdoorlab.data import ChecksumWarning, Dataset, list_datasets, load_dataset, resolve_data_dir
from backdoorlab.errors import BackdoorlabError

from conftest import IDX_NAMES, shared_data  # noqa: E402


def assert_names(info, path, *fragments: str) -> None:
    """The BackdoorlabError in ``info`` is one line, names ``path`` and contains every fragment."""
    msg = str(info.value)
    assert str(path) in msg and "\n" not in msg, msg
    for fragment in fragments:
        assert fragment in msg, msg


# ------------------------------------------------------------------------------------- small files


def idx(magic: int, dims: tuple[int, ...], payload: bytes) -> bytes:
    return magic.to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in dims) + payload


def write_gz(path: Path, data: bytes) -> None:
    path.write_bytes(gzip.compress(data, compresslevel=1))


def make_fake_mnist(root: Path, n_train: int = 20, n_test: int = 10) -> dict[str, np.ndarray]:
    """Write a tiny valid MNIST-layout dataset to ``root/mnist``; returns the arrays written."""
    rng = np.random.default_rng(0)
    out = {}
    (root / "mnist").mkdir(parents=True)
    for split, n in (("train", n_train), ("t10k", n_test)):
        x = rng.integers(0, 256, (n, 28, 28), dtype=np.uint8)
        y = (np.arange(n) % 10).astype(np.uint8)
        write_gz(root / "mnist" / f"{split}-images-idx3-ubyte.gz", idx(2051, (n, 28, 28), x.tobytes()))
        write_gz(root / "mnist" / f"{split}-labels-idx1-ubyte.gz", idx(2049, (n,), y.tobytes()))
        out[f"{split}_x"], out[f"{split}_y"] = x, y
    return out


def test_fake_mnist_loads_and_warns_about_checksum(tmp_path):
    arrays = make_fake_mnist(tmp_path)
    with pytest.warns(ChecksumWarning, match="differs from the official checksum"):
        ds = load_dataset("mnist", data_dir=tmp_path, download=False, progress=False)
    assert ds.train_x.shape == (20, 1, 28, 28) and ds.test_x.shape == (10, 1, 28, 28)
    assert torch.equal(ds.train_x[:, 0], torch.from_numpy(arrays["train_x"]))
    assert ds.train_y.dtype == torch.int64 and ds.train_y.tolist() == arrays["train_y"].tolist()


def _gz_truncated(p):
    p.write_bytes(p.read_bytes()[: p.stat().st_size // 2])


CORRUPTIONS = {
    # name: (file to corrupt, corruption, expected message fragment)
    "gzip-truncated": ("train-images-idx3-ubyte.gz", _gz_truncated, "truncated"),
    "payload-truncated": ("train-images-idx3-ubyte.gz",
                          lambda p: write_gz(p, idx(2051, (20, 28, 28), bytes(1000))),
                          "truncated: expected 15680 bytes of image data"),
    "trailing-data": ("train-images-idx3-ubyte.gz",
                      lambda p: write_gz(p, idx(2051, (20, 28, 28), bytes(15681))), "trailing data"),
    "header-truncated": ("train-labels-idx1-ubyte.gz", lambda p: write_gz(p, b"\0\0\x08"), "IDX header"),
    "wrong-magic": ("train-images-idx3-ubyte.gz",
                    lambda p: write_gz(p, idx(2049, (20, 28, 28), bytes(15680))),
                    "magic number 2049, expected 2051 for image data"),
    "not-gzip": ("t10k-images-idx3-ubyte.gz", lambda p: p.write_bytes(b"<html>not found</html>"), "not a valid gzip"),
    "label-out-of-range": ("t10k-labels-idx1-ubyte.gz",
                           lambda p: write_gz(p, idx(2049, (10,), bytes([10] * 10))), "label 10, expected labels 0..9"),
    "count-mismatch": ("t10k-labels-idx1-ubyte.gz",
                       lambda p: write_gz(p, idx(2049, (9,), bytes(9))), "10 images but"),
}


@pytest.mark.parametrize("case", CORRUPTIONS)
def test_corrupt_idx_file_raises_naming_it(tmp_path, case):
    make_fake_mnist(tmp_path)
    name, corrupt, fragment = CORRUPTIONS[case]
    path = tmp_path / "mnist" / name
    corrupt(path)
    with pytest.raises(BackdoorlabError) as info:
        load_dataset("mnist", data_dir=tmp_path, download=False, progress=False)
    assert_names(info, path, fragment)


def test_missing_file_without_download(tmp_path):
    make_fake_mnist(tmp_path)
    (tmp_path / "mnist" / "t10k-labels-idx1-ubyte.gz").unlink()
    with pytest.raises(BackdoorlabError) as info:
        load_dataset("mnist", data_dir=tmp_path, download=False)
    assert_names(info, tmp_path / "mnist", "t10k-labels-idx1-ubyte.gz", "download=False")


def cifar_batch(n: int = 10_000, labels=None) -> bytes:
    data = np.zeros((n, 3072), dtype=np.uint8)
    labels = list(np.arange(n) % 10) if labels is None else labels
    return pickle.dumps({b"data": data, b"labels": [int(v) for v in labels]}, protocol=4)


CIFAR_BATCHES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


def make_cifar_dir(root: Path, batch: bytes) -> Path:
    """Extracted CIFAR layout with every batch file holding ``batch``; returns the batches directory."""
    d = root / "cifar10" / "cifar-10-batches-py"
    d.mkdir(parents=True)
    for name in CIFAR_BATCHES:
        (d / name).write_bytes(batch)
    return d


def test_truncated_cifar_archive(tmp_path):
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w:gz") as tar:
        payload = np.random.default_rng(0).integers(0, 256, 1 << 20, dtype=np.uint8).tobytes()
        info = tarfile.TarInfo("cifar-10-batches-py/data_batch_1")
        info.size = len(payload)
        tar.addfile(info, io.BytesIO(payload))
    path = tmp_path / "cifar10" / "cifar-10-python.tar.gz"
    path.parent.mkdir()
    path.write_bytes(buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(BackdoorlabError) as info:
        load_dataset("cifar10", data_dir=tmp_path, download=False)
    assert_names(info, path, "not a complete tar.gz archive")


@pytest.mark.parametrize("batch, fragment", [
    (cifar_batch(n=10), "expected uint8 array of shape (10000, 3072)"),
    (pickle.dumps([1, 2, 3]), "expected a dict with b'data' and b'labels'"),
    (cifar_batch(labels=[11] * 10_000), "bad b'labels'"),
    (b"\x80\x04garbage", "not a valid CIFAR pickle"),
])
def test_bad_cifar_batch_raises_naming_it(tmp_path, batch, fragment):
    d = make_cifar_dir(tmp_path, batch)
    with pytest.raises(BackdoorlabError) as info:
        load_dataset("cifar10", data_dir=tmp_path, download=False)
    assert_names(info, d / "data_batch_1", fragment)


class _Evil:
    def __reduce__(self):
        return (os.getpid, ())  # harmless, but a pickle must not be able to call it


def test_cifar_pickle_with_foreign_globals_is_refused(tmp_path):
    d = make_cifar_dir(tmp_path, pickle.dumps({b"data": _Evil(), b"labels": []}))
    with pytest.raises(BackdoorlabError) as info:
        load_dataset("cifar10", data_dir=tmp_path, download=False)
    assert_names(info, d / "data_batch_1", "refusing to load")


def test_cifar_dir_missing_batch(tmp_path):
    d = make_cifar_dir(tmp_path, cifar_batch())
    (d / "data_batch_4").unlink()
    with pytest.raises(BackdoorlabError) as info:
        load_dataset("cifar10", data_dir=tmp_path, download=False)
    assert_names(info, d / "data_batch_4", "missing")


# -------------------------------------------------------------------------------- names, data dir


def test_list_datasets():
    assert list_datasets() == ["cifar10", "digits", "fashion-mnist", "mnist"]


def test_unknown_dataset_lists_valid_names():
    with pytest.raises(BackdoorlabError) as info:
        load_dataset("imagenet")
    assert str(info.value) == ("unknown dataset 'imagenet'; valid: 'cifar10', 'digits', 'fashion-mnist', 'mnist', "
                               "folder:PATH, npz:PATH, any of them as NAME[CLASSES]")


def test_resolve_data_dir_precedence(tmp_path, monkeypatch):
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "xdg"))
    monkeypatch.setenv("BACKDOORLAB_DATA", str(tmp_path / "env"))
    assert resolve_data_dir(tmp_path / "arg") == tmp_path / "arg"
    assert resolve_data_dir(str(tmp_path / "arg")) == tmp_path / "arg"
    assert resolve_data_dir() == tmp_path / "env"
    monkeypatch.delenv("BACKDOORLAB_DATA")
    assert resolve_data_dir() == tmp_path / "xdg" / "backdoorlab" / "data"
    monkeypatch.delenv("XDG_CACHE_HOME")
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    assert resolve_data_dir() == tmp_path / "home" / ".cache" / "backdoorlab" / "data"


# ------------------------------------------------------------------------------------------ digits


def test_digits_split():
    ds = load_dataset("digits", data_dir="/nonexistent")  # bundled with scikit-learn: needs no files
    assert isinstance(ds, Dataset) and ds.name == "digits"
    assert ds.train_x.shape == (1297, 1, 8, 8) and ds.test_x.shape == (500, 1, 8, 8)
    assert ds.train_x.dtype == torch.uint8 and ds.train_y.dtype == torch.int64
    assert int(ds.train_x.max()) == 255 and int(ds.train_x.min()) == 0
    assert ds.class_names == [str(i) for i in range(10)] and ds.image_size == (8, 8) and ds.in_channels == 1
    counts = torch.bincount(ds.test_y, minlength=10)
    assert counts.min() >= 48 and counts.max() <= 52  # stratified: ~50 per class
    again = load_dataset("digits")
    assert torch.equal(ds.train_x, again.train_x) and torch.equal(ds.test_y, again.test_y)


# ------------------------------------------------------------------------------------- real data


@pytest.mark.parametrize("name, mean, std", [("mnist", 0.1307, 0.3081), ("fashion-mnist", 0.2860, 0.3530)])
def test_idx_datasets_on_real_data(name, mean, std):
    root = shared_data(*(f"{name}/{f}" for f in IDX_NAMES))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ChecksumWarning)  # these copies are the official files
        ds = load_dataset(name, data_dir=root, download=False, progress=False)
    assert ds.name == name and ds.num_classes == 10 and ds.in_channels == 1 and ds.image_size == (28, 28)
    assert ds.train_x.shape == (60000, 1, 28, 28) and ds.test_x.shape == (10000, 1, 28, 28)
    assert ds.train_x.dtype == ds.test_x.dtype == torch.uint8 and ds.train_x.is_contiguous()
    assert ds.train_y.shape == (60000,) and ds.test_y.shape == (10000,)
    assert ds.train_y.dtype == ds.test_y.dtype == torch.int64
    assert set(ds.train_y.tolist()) == set(ds.test_y.tolist()) == set(range(10))
    assert ds.mean == pytest.approx((mean,), abs=1e-4) and ds.std == pytest.approx((std,), abs=1e-4)
    if name == "fashion-mnist":
        assert ds.class_names[0] == "T-shirt/top" and ds.class_names[9] == "Ankle boot"


@pytest.fixture(scope="module")
def cifar():
    """CIFAR-10 loaded once from the shared tar.gz, with the warnings that loading emitted."""
    root = shared_data("cifar10/cifar-10-python.tar.gz")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        ds = load_dataset("cifar10", data_dir=root, download=False, progress=False)
    return root, ds, caught


def test_cifar10_on_real_data(cifar):
    _, ds, _ = cifar
    assert ds.train_x.shape == (50000, 3, 32, 32) and ds.test_x.shape == (10000, 3, 32, 32)
    assert ds.train_x.dtype == torch.uint8 and ds.train_x.is_contiguous() and ds.test_x.is_contiguous()
    assert ds.train_y.dtype == torch.int64 and ds.train_y[:10].tolist() == [6, 9, 9, 4, 1, 1, 2, 7, 8, 3]
    assert torch.bincount(ds.train_y).tolist() == [5000] * 10 and torch.bincount(ds.test_y).tolist() == [1000] * 10
    assert ds.class_names == ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    assert ds.mean == pytest.approx((0.49140, 0.48216, 0.44653), abs=2e-5)
    assert ds.std == pytest.approx((0.24703, 0.24349, 0.26159), abs=2e-5)


def test_cifar10_checksum_mismatch_warns(cifar):
    root, _, caught = cifar
    msgs = [str(w.message) for w in caught if issubclass(w.category, ChecksumWarning)]
    assert len(msgs) == 1, msgs
    assert str(root / "cifar10" / "cifar-10-python.tar.gz") in msgs[0] and "parsed fine" in msgs[0]
    assert "\n" not in msgs[0]


def test_cifar10_prefers_extracted_directory(cifar, tmp_path):
    root, ds, _ = cifar
    (tmp_path / "cifar10").mkdir()
    with tarfile.open(root / "cifar10" / "cifar-10-python.tar.gz") as tar:
        tar.extractall(tmp_path / "cifar10", filter="data")
    (tmp_path / "cifar10" / "cifar-10-python.tar.gz").write_bytes(b"junk that must not be read")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ChecksumWarning)
        extracted = load_dataset("cifar10", data_dir=tmp_path, download=False)
    assert torch.equal(extracted.train_x, ds.train_x) and torch.equal(extracted.test_y, ds.test_y)
