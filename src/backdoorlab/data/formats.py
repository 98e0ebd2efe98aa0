"""Parsers for the on-disk data formats.

* IDX (MNIST, Fashion-MNIST): gzip-compressed, big-endian header, then one uint8 per pixel or label.
* CIFAR-10 "python version": pickled dicts (``b'data'``: uint8 (10000, 3072), channel-planar;
  ``b'labels'``: list of int), read from the extracted ``cifar-10-batches-py/`` directory or straight out
  of ``cifar-10-python.tar.gz``.

Every problem with a file raises :class:`BackdoorlabError` with a one-line message naming the file.
"""

from __future__ import annotations

import gzip
import io
import math
import pickle
import tarfile
import zlib
from pathlib import Path

import numpy as np

from backdoorlab.errors import BackdoorlabError

try:  # numpy >= 1.26 (numpy 2 pickles refer to numpy._core)
    from numpy._core import multiarray as _multiarray, numeric as _numeric
except ImportError:  # pragma: no cover - older numpy
    from numpy.core import multiarray as _multiarray, numeric as _numeric

IDX_IMAGES_MAGIC = 2051
IDX_LABELS_MAGIC = 2049

CIFAR_DIR = "cifar-10-batches-py"
CIFAR_TRAIN_BATCHES = tuple(f"data_batch_{i}" for i in range(1, 6))
CIFAR_TEST_BATCH = "test_batch"
CIFAR_META = "batches.meta"
CIFAR_BATCH_SIZE = 10_000
CIFAR_CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
_MAX_MEMBER_BYTES = 64 * 2**20  # a real batch is ~31 MB; refuse absurd archive members


def _oneline(exc: BaseException) -> str:
    """``exc`` as a short single line, e.g. ``EOFError: Compressed file ended ...``."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


# ----------------------------------------------------------------------------------------------- IDX


def _read_gzip(path: Path, dataset: str) -> bytes:
    """Whole decompressed content of the gzip file ``path``."""
    try:
        with gzip.open(path, "rb") as f:
            return f.read()
    except FileNotFoundError:
        raise BackdoorlabError(f"{dataset}: {path} not found") from None
    except EOFError as e:
        raise BackdoorlabError(f"{dataset}: {path} is truncated (the gzip stream ends early: {_oneline(e)})") from None
    except (OSError, zlib.error) as e:  # gzip.BadGzipFile is an OSError
        raise BackdoorlabError(f"{dataset}: {path} is not a valid gzip file ({_oneline(e)})") from None


def _read_idx(path: Path, dataset: str, magic: int, ndim: int, kind: str) -> np.ndarray:
    """Decompress and check one IDX file; returns its uint8 values shaped by the header's dims."""
    data = _read_gzip(path, dataset)
    header = 4 + 4 * ndim
    if len(data) < header:
        raise BackdoorlabError(
            f"{dataset}: {path} is truncated: expected an IDX header of {header} bytes, got {len(data)} bytes"
        )
    got_magic = int.from_bytes(data[:4], "big")
    if got_magic != magic:
        raise BackdoorlabError(f"{dataset}: {path} has IDX magic number {got_magic}, expected {magic} for {kind} data")
    dims = tuple(int.from_bytes(data[4 + 4 * i : 8 + 4 * i], "big") for i in range(ndim))
    expected = math.prod(dims)
    got = len(data) - header
    if got < expected:
        raise BackdoorlabError(
            f"{dataset}: {path} is truncated: expected {expected} bytes of {kind} data for shape {dims}, got {got}"
        )
    if got > expected:
        raise BackdoorlabError(
            f"{dataset}: {path} has {got} bytes of {kind} data, expected {expected} for shape {dims} (trailing data)"
        )
    return np.frombuffer(data, dtype=np.uint8, offset=header).reshape(dims)


def read_idx_images(path: Path, dataset: str) -> np.ndarray:
    """Read a gzip IDX image file (magic 2051).

    Returns a writable uint8 array of shape (N, 1, rows, cols), pixel values 0..255.
    """
    return _read_idx(Path(path), dataset, IDX_IMAGES_MAGIC, 3, "image")[:, None].copy()


def read_idx_labels(path: Path, dataset: str, num_classes: int) -> np.ndarray:
    """Read a gzip IDX label file (magic 2049); returns int64 labels of shape (N,), each < ``num_classes``."""
    path = Path(path)
    labels = _read_idx(path, dataset, IDX_LABELS_MAGIC, 1, "label")
    if labels.size and labels.max() >= num_classes:
        raise BackdoorlabError(
            f"{dataset}: {path} has label {labels.max()}, expected labels 0..{num_classes - 1}"
        )
    return labels.astype(np.int64)


def read_idx_pair(images: Path, labels: Path, dataset: str, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Images (N, 1, H, W) uint8 and labels (N,) int64 from two IDX files whose counts must agree."""
    x = read_idx_images(images, dataset)
    y = read_idx_labels(labels, dataset, num_classes)
    if len(x) != len(y):
        raise BackdoorlabError(f"{dataset}: {images} holds {len(x)} images but {labels} holds {len(y)} labels")
    return x, y


# --------------------------------------------------------------------------------------------- CIFAR

# Only what numpy needs to rebuild arrays and scalars; anything else in a pickle is refused.
_SAFE_GLOBALS = {
    **{(mod, "_reconstruct"): _multiarray._reconstruct for mod in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(mod, "scalar"): _multiarray.scalar for mod in ("numpy.core.multiarray", "numpy._core.multiarray")},
    **{(mod, "_frombuffer"): _numeric._frombuffer for mod in ("numpy.core.numeric", "numpy._core.numeric")},
    ("numpy", "ndarray"): np.ndarray,
    ("numpy", "dtype"): np.dtype,
}


class _SafeUnpickler(pickle.Unpickler):
    """Unpickler that builds only builtin containers and numpy arrays (archives may come from the internet)."""

    def find_class(self, module: str, name: str):
        try:
            return _SAFE_GLOBALS[(module, name)]
        except KeyError:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}") from None


def _unpickle(data: bytes, source: str, dataset: str):
    try:
        return _SafeUnpickler(io.BytesIO(data), encoding="bytes").load()
    except Exception as e:  # unpickling can fail in many ways; all mean "bad file"
        raise BackdoorlabError(f"{dataset}: {source} is not a valid CIFAR pickle ({_oneline(e)})") from None


def _field(d: dict, key: str):
    """``d[b'key']`` (python-2 pickles, encoding='bytes') or ``d['key']``; None if absent."""
    return d.get(key.encode(), d.get(key))


def parse_cifar_batch(data: bytes, source: str, dataset: str = "cifar10") -> tuple[np.ndarray, np.ndarray]:
    """Parse one pickled CIFAR batch.

    Returns images uint8 (10000, 3, 32, 32) (channels R, G, B; values 0..255) and labels int64 (10000,).
    ``source`` names the batch in error messages.
    """
    batch = _unpickle(data, source, dataset)
    if not isinstance(batch, dict) or _field(batch, "data") is None or _field(batch, "labels") is None:
        raise BackdoorlabError(f"{dataset}: {source} is not a CIFAR batch: expected a dict with b'data' and b'labels'")
    x, labels = _field(batch, "data"), _field(batch, "labels")
    shape = (CIFAR_BATCH_SIZE, 3 * 32 * 32)
    if not isinstance(x, np.ndarray) or x.dtype != np.uint8 or x.shape != shape:
        got = f"{x.dtype} array of shape {x.shape}" if isinstance(x, np.ndarray) else type(x).__name__
        raise BackdoorlabError(f"{dataset}: {source} has b'data' {got}, expected uint8 array of shape {shape}")
    try:
        y = np.asarray(labels, dtype=np.int64)
    except (TypeError, ValueError):
        y = None
    if y is None or y.shape != (CIFAR_BATCH_SIZE,) or y.min() < 0 or y.max() >= len(CIFAR_CLASSES):
        raise BackdoorlabError(
            f"{dataset}: {source} has bad b'labels': "
            f"expected {CIFAR_BATCH_SIZE} integers in 0..{len(CIFAR_CLASSES) - 1}"
        )
    return x.reshape(CIFAR_BATCH_SIZE, 3, 32, 32), y


def parse_cifar_meta(data: bytes, source: str, dataset: str = "cifar10") -> list[str]:
    """Class names from ``batches.meta`` (``b'label_names'``); must be 10 names."""
    meta = _unpickle(data, source, dataset)
    names = _field(meta, "label_names") if isinstance(meta, dict) else None
    if not isinstance(names, list) or len(names) != len(CIFAR_CLASSES):
        raise BackdoorlabError(f"{dataset}: {source} has no list of {len(CIFAR_CLASSES)} b'label_names'")
    return [n.decode() if isinstance(n, bytes) else str(n) for n in names]


def _read_cifar_members(source: Path, dataset: str) -> dict[str, tuple[str, bytes]]:
    """``{member name: (where, raw bytes)}`` for the batches (and ``batches.meta`` if present), read from an
    extracted directory or a tar.gz; ``where`` names the member in error messages."""
    wanted = {*CIFAR_TRAIN_BATCHES, CIFAR_TEST_BATCH, CIFAR_META}
    found: dict[str, bytes] = {}
    if source.is_dir():
        for name in wanted:
            try:
                found[name] = (source / name).read_bytes()
            except FileNotFoundError:
                pass
            except OSError as e:
                raise BackdoorlabError(f"{dataset}: cannot read {source / name} ({_oneline(e)})") from None
        where = lambda name: str(source / name)  # noqa: E731
    else:
        try:
            # stream mode: one sequential pass over the gzip, nothing extracted to disk
            with tarfile.open(source, "r|gz") as tar:
                for member in tar:
                    parent, _, name = member.name.rpartition("/")
                    if parent.rstrip("/").endswith(CIFAR_DIR) and name in wanted and member.isfile():
                        if member.size > _MAX_MEMBER_BYTES:
                            raise BackdoorlabError(
                                f"{dataset}: {source} member {member.name} is {member.size} bytes, "
                                "too large for a CIFAR batch"
                            )
                        found[name] = tar.extractfile(member).read()
                        if len(found) == len(wanted):
                            break
        except FileNotFoundError:
            raise BackdoorlabError(f"{dataset}: {source} not found") from None
        except (tarfile.TarError, OSError, EOFError, zlib.error) as e:
            raise BackdoorlabError(f"{dataset}: {source} is not a complete tar.gz archive ({_oneline(e)})") from None
        where = lambda name: f"{source}:{CIFAR_DIR}/{name}"  # noqa: E731
    for name in (*CIFAR_TRAIN_BATCHES, CIFAR_TEST_BATCH):
        if name not in found:
            raise BackdoorlabError(f"{dataset}: {where(name)} is missing (expected the CIFAR-10 python batches)")
    return {name: (where(name), data) for name, data in found.items()}


def read_cifar10(source: Path, dataset: str = "cifar10"):
    """Read CIFAR-10 from ``cifar-10-batches-py/`` (a directory) or ``cifar-10-python.tar.gz``.

    Returns ``(train_x, train_y, test_x, test_y, class_names)``: uint8 (50000, 3, 32, 32), int64 (50000,),
    uint8 (10000, 3, 32, 32), int64 (10000,), and the 10 class names.
    """
    source = Path(source)
    members = _read_cifar_members(source, dataset)
    parse = lambda name: parse_cifar_batch(members[name][1], members[name][0], dataset)  # noqa: E731
    train = [parse(name) for name in CIFAR_TRAIN_BATCHES]
    test_x, test_y = parse(CIFAR_TEST_BATCH)
    if CIFAR_META in members:
        names = parse_cifar_meta(members[CIFAR_META][1], members[CIFAR_META][0], dataset)
    else:
        names = list(CIFAR_CLASSES)
    train_x = np.concatenate([x for x, _ in train])
    train_y = np.concatenate([y for _, y in train])
    return train_x, train_y, test_x, test_y, names
