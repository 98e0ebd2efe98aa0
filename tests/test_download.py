"""Tests for backdoorlab.data.download against a local HTTP server (no internet needed).

BACKDOORLAB_MIRROR is pointed at a ThreadingHTTPServer on 127.0.0.1 serving either the real data
directory (env BACKDOORLAB_DATA; those tests skip without it) or a directory the test builds.
"""

import functools
import gzip
import hashlib
import os
import socket
import threading
import warnings
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
import torch

from backdoorlab.data import ChecksumWarning, load_dataset
from backdoorlab.data import download as dl
from backdoorlab.data.formats import read_idx_labels
from backdoorlab.errors import BackdoorlabError

from conftest import IDX_NAMES, shared_data  # noqa: E402


def files_under(path: Path) -> list[str]:
    return sorted(str(p.relative_to(path)) for p in path.rglob("*") if p.is_file())


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture
def serve():
    """``serve(directory)`` starts an HTTP server on 127.0.0.1 for ``directory`` and returns its base URL;
    all servers are shut down after the test."""
    servers = []

    def start(directory: Path) -> str:
        server = ThreadingHTTPServer(("127.0.0.1", 0), functools.partial(_QuietHandler, directory=str(directory)))
        threading.Thread(target=server.serve_forever, daemon=True).start()
        servers.append(server)
        return f"http://127.0.0.1:{server.server_address[1]}"

    yield start
    for server in servers:
        server.shutdown()
        server.server_close()


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_download_mnist_from_mirror(serve, tmp_path, monkeypatch):
    shared = shared_data(*(f"mnist/{f}" for f in IDX_NAMES))
    monkeypatch.setenv(dl.MIRROR_ENV, serve(shared))
    with warnings.catch_warnings():
        warnings.simplefilter("error", ChecksumWarning)
        ds = load_dataset("mnist", data_dir=tmp_path, progress=False)
    assert files_under(tmp_path) == sorted(f"mnist/{f}" for f in IDX_NAMES)  # no temp files left behind
    for f in IDX_NAMES:
        assert hashlib.md5((tmp_path / "mnist" / f).read_bytes()).hexdigest() == dl.MD5["mnist"][f]
    ref = load_dataset("mnist", data_dir=shared, download=False, progress=False)
    for field in ("train_x", "train_y", "test_x", "test_y"):
        assert torch.equal(getattr(ds, field), getattr(ref, field))
    assert (ds.class_names, ds.mean, ds.std) == (ref.class_names, ref.mean, ref.std)


def test_download_one_fashion_file_with_mirror_argument(serve, tmp_path, monkeypatch, capsys):
    shared = shared_data("fashion-mnist/train-labels-idx1-ubyte.gz")
    monkeypatch.delenv(dl.MIRROR_ENV, raising=False)
    path = dl.ensure_file("fashion-mnist", "train-labels-idx1-ubyte.gz", tmp_path, mirror=serve(shared), progress=True)
    assert path == tmp_path / "fashion-mnist" / "train-labels-idx1-ubyte.gz"
    assert dl.md5sum(path) == dl.MD5["fashion-mnist"]["train-labels-idx1-ubyte.gz"]
    assert read_idx_labels(path, "fashion-mnist", 10).shape == (60000,)
    assert "fashion-mnist/train-labels-idx1-ubyte.gz" in capsys.readouterr().err  # the progress bar


def test_bad_checksum_is_an_error_and_leaves_nothing(serve, tmp_path, monkeypatch):
    served = tmp_path / "served" / "mnist"
    served.mkdir(parents=True)
    for f in IDX_NAMES:
        (served / f).write_bytes(b"not the real file")
    monkeypatch.setenv(dl.MIRROR_ENV, serve(served.parent))
    target = tmp_path / "data"
    with pytest.raises(BackdoorlabError) as info:
        load_dataset("mnist", data_dir=target, progress=False)
    msg = str(info.value)
    assert "checksum" in msg and "train-images-idx3-ubyte.gz" in msg and dl.MD5["mnist"][IDX_NAMES[0]] in msg, msg
    assert files_under(target) == []


@pytest.mark.parametrize("where", ["unreachable", "404"])
def test_failed_download_names_file_and_cause(serve, tmp_path, monkeypatch, where):
    (tmp_path / "empty").mkdir()
    mirror = f"http://127.0.0.1:{unused_port()}" if where == "unreachable" else serve(tmp_path / "empty")
    monkeypatch.setenv(dl.MIRROR_ENV, mirror)
    with pytest.raises(BackdoorlabError) as info:
        load_dataset("mnist", data_dir=tmp_path / "data", progress=False)
    msg = str(info.value)
    assert msg.startswith("could not download mnist/train-images-idx3-ubyte.gz from any mirror: ") and "\n" not in msg
    assert ("HTTP 404" if where == "404" else "refused") in msg, msg
    assert "place the file at" in msg and "--data-dir" in msg
    assert files_under(tmp_path / "data") == []


def test_present_files_are_not_downloaded(tmp_path, monkeypatch):
    """Files already in place are used as they are, even with download=True and no reachable mirror."""
    (tmp_path / "mnist").mkdir()
    for split, n in (("train", 20), ("t10k", 10)):
        images = (2051).to_bytes(4, "big") + b"".join(d.to_bytes(4, "big") for d in (n, 28, 28)) + bytes(n * 784)
        labels = (2049).to_bytes(4, "big") + n.to_bytes(4, "big") + bytes(n)
        (tmp_path / "mnist" / f"{split}-images-idx3-ubyte.gz").write_bytes(gzip.compress(images))
        (tmp_path / "mnist" / f"{split}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(labels))
    monkeypatch.setenv(dl.MIRROR_ENV, f"http://127.0.0.1:{unused_port()}")
    with pytest.warns(ChecksumWarning):
        ds = load_dataset("mnist", data_dir=tmp_path, progress=False)
    assert len(ds.train_x) == 20


def test_cifar_download_with_fake_archive(serve, tmp_path, monkeypatch):
    fake = b"a tiny stand-in for the 170 MB archive"
    (tmp_path / "served" / "cifar10").mkdir(parents=True)
    (tmp_path / "served" / "cifar10" / "cifar-10-python.tar.gz").write_bytes(fake)
    monkeypatch.setitem(dl.MD5["cifar10"], "cifar-10-python.tar.gz", hashlib.md5(fake).hexdigest())
    monkeypatch.setenv(dl.MIRROR_ENV, serve(tmp_path / "served") + "/")  # a trailing slash is fine
    path = dl.ensure_file("cifar10", "cifar-10-python.tar.gz", tmp_path / "data", progress=False)
    assert path.read_bytes() == fake and files_under(tmp_path / "data") == ["cifar10/cifar-10-python.tar.gz"]


def test_official_urls(monkeypatch):
    monkeypatch.delenv(dl.MIRROR_ENV, raising=False)
    assert dl.mirror_urls("mnist", "t10k-labels-idx1-ubyte.gz") == [
        "https://ossci-datasets.s3.amazonaws.com/mnist/t10k-labels-idx1-ubyte.gz",
        "http://yann.lecun.com/exdb/mnist/t10k-labels-idx1-ubyte.gz",
    ]
    assert dl.mirror_urls("cifar10", "cifar-10-python.tar.gz") == [
        "https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz"
    ]
    assert dl.mirror_urls("fashion-mnist", "x.gz") == [
        "http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/x.gz"
    ]
    assert dl.MD5["cifar10"]["cifar-10-python.tar.gz"] == "c58f30108f718f92721af3b95e74349a"
