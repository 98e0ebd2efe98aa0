"""``npz:PATH``: a user's images in one NumPy ``.npz`` file, read without unpickling anything.

Keys ``x_train``, ``y_train``, ``x_test``, ``y_test``; images uint8, NHWC or NCHW with 1 or 3 channels (or
(N, H, W) grey); labels integers 0..K-1. An optional ``class_names`` key (strings) names the K classes; without
it K is the largest label + 1 and the names are ``"0"``, ``"1"``, ... Every image is brought to one size
(image_size.py).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from backdoorlab.data.datasets import Dataset
from backdoorlab.data.image_size import check_image_size, resize_array, resize_record, warn_resized
from backdoorlab.data.median_defense import check_resize_defense
from backdoorlab.data.resize import DEFAULT_RESIZE, check_resize
from backdoorlab.data.registry import DATASETS, DatasetOptions
from backdoorlab.data.user_dataset import make_user_dataset
from backdoorlab.errors import BackdoorlabError

KEYS = ("x_train", "y_train", "x_test", "y_test")
CHANNELS = (1, 3)


def read_arrays(path: Path) -> dict[str, np.ndarray]:
    """The arrays of ``path`` (``allow_pickle=False``: an object array is refused, never unpickled)."""
    try:
        with np.load(path, allow_pickle=False) as npz:
            missing = [k for k in KEYS if k not in npz.files]
            if missing:
                raise BackdoorlabError(f"{path}: no {missing[0]!r} array (an npz data set holds "
                                       f"{', '.join(KEYS)}; it has {', '.join(npz.files) or 'none'})")
            return {k: npz[k] for k in npz.files if k in KEYS or k == "class_names"}
    except (OSError, ValueError, EOFError) as e:  # not a zip, a damaged member, an object array
        raise BackdoorlabError(f"{path}: not a readable npz file ({e})") from None


def as_nchw(x: np.ndarray, key: str, path: Path) -> np.ndarray:
    """``x`` (uint8, NHWC, NCHW or NHW) as (N, C, H, W); a one-line error for any other dtype or shape."""
    if x.dtype != np.uint8:
        raise BackdoorlabError(f"{path}: {key!r} must be uint8 (pixel values 0..255), got {x.dtype}")
    if x.ndim == 3:
        return x[:, None]
    if x.ndim == 4:
        nhwc, nchw = x.shape[3] in CHANNELS, x.shape[1] in CHANNELS
        if nhwc and not nchw:
            return x.transpose(0, 3, 1, 2)
        if nchw and not nhwc:
            return x
        if nhwc and nchw:  # (N, 3, H, 3), say: the smaller side is the channels unless the image is 1 pixel wide
            return x if x.shape[1] <= x.shape[3] else x.transpose(0, 3, 1, 2)
    raise BackdoorlabError(f"{path}: {key!r} has shape {x.shape}; expected (N, H, W, C) or (N, C, H, W) with C = 1 "
                           f"or 3, or (N, H, W)")


def labels(y: np.ndarray, key: str, n: int, path: Path) -> np.ndarray:
    """``y`` as int64 (N,), checked: integers, one per image, none negative."""
    if y.ndim != 1 or not np.issubdtype(y.dtype, np.integer):
        raise BackdoorlabError(f"{path}: {key!r} must be a 1-D array of integer labels, got {y.dtype} {y.shape}")
    if len(y) != n:
        images = key.replace("y_", "x_")
        raise BackdoorlabError(f"{path}: {key!r} has {len(y)} labels but {images!r} has {n} images")
    if len(y) and y.min() < 0:
        raise BackdoorlabError(f"{path}: {key!r} holds label {int(y.min())}; labels are 0..K-1")
    return y.astype(np.int64)


def class_names(arrays: dict, ys: list[np.ndarray], path: Path) -> list[str]:
    """The ``class_names`` array as a list, or ``"0".."K-1"`` for the largest label K-1; a label beyond the
    names is an error."""
    top = max(int(y.max()) for y in ys if len(y)) if any(len(y) for y in ys) else -1
    if "class_names" not in arrays:
        return [str(k) for k in range(top + 1)]
    names = arrays["class_names"]
    if names.ndim != 1 or names.dtype.kind not in "U" or len(set(names.tolist())) != len(names):
        raise BackdoorlabError(f"{path}: 'class_names' must be a 1-D array of distinct strings, got "
                               f"{names.dtype} {names.shape}")
    if top >= len(names):
        raise BackdoorlabError(f"{path}: label {top} is out of range: 'class_names' names {len(names)} classes "
                               f"(labels 0..{len(names) - 1})")
    return [str(n) for n in names]


def resize_all(x: np.ndarray, size: tuple[int, int], method: str = DEFAULT_RESIZE,
               defense: str = "none") -> np.ndarray:
    """Each (C, H, W) image of ``x`` resized to ``size`` (H, W) with ``method`` and ``defense``."""
    out = np.empty((len(x), x.shape[1], *size), dtype=np.uint8)
    for i, image in enumerate(x):
        hwc = image[0] if image.shape[0] == 1 else image.transpose(1, 2, 0)
        resized = resize_array(np.ascontiguousarray(hwc), size, method, defense)
        out[i] = resized[None] if resized.ndim == 2 else resized.transpose(2, 0, 1)
    return out


@DATASETS.register(
    "npz", DatasetOptions,
    "Your images in a NumPy file, as npz:PATH: x_train, y_train, x_test, y_test (uint8 NHWC or NCHW, 1 or 3 "
    "channels; optional class_names).",
    takes_path=True, holdout=5000, arch="small-cnn", sanitizer_augment="affine",
)
def load_npz(path: str, image_size: tuple[int, int] | None = None, resize: str | None = None,
             resize_defense: str | None = None) -> Dataset:
    """The arrays of the npz file ``path`` (see the module's docstring), resized to ``image_size`` (H, W) when
    given, with ``resize`` (data/resize.py; default Lanczos) and ``resize_defense`` (``"median"``: the selective
    median filter first); train and test images must otherwise share their channels and size."""
    file = Path(path).expanduser().resolve()
    if not file.is_file():
        raise BackdoorlabError(f"{file}: {'not a file' if file.exists() else 'no such file'} (npz:PATH needs an "
                               f".npz file)")
    size = check_image_size(image_size)
    method = check_resize(resize)
    defense = check_resize_defense(resize_defense, method)
    arrays = read_arrays(file)
    x = {s: as_nchw(arrays[f"x_{s}"], f"x_{s}", file) for s in ("train", "test")}
    y = {s: labels(arrays[f"y_{s}"], f"y_{s}", len(x[s]), file) for s in ("train", "test")}
    if x["train"].shape[1] != x["test"].shape[1]:
        raise BackdoorlabError(f"{file}: 'x_train' has {x['train'].shape[1]} channel(s) but 'x_test' has "
                               f"{x['test'].shape[1]}")
    target = size or tuple(x["train"].shape[2:])
    resized = 0
    for s in ("train", "test"):
        if tuple(x[s].shape[2:]) != target:
            if size is None:
                raise BackdoorlabError(f"{file}: 'x_test' images are {x[s].shape[2]}x{x[s].shape[3]} but "
                                       f"'x_train' images are {target[0]}x{target[1]} (--image-size resizes both)")
            x[s], resized = resize_all(x[s], target, method, defense), resized + len(x[s])
    warn_resized(resized, len(x["train"]) + len(x["test"]), target, False, f"npz:{file}")
    names = class_names(arrays, [y["train"], y["test"]], file)
    source = {"kind": "npz", "path": str(file), "split": None,
              "images": {s: len(y[s]) for s in ("train", "test")}, "resized": resized,
              **resize_record(method, defense)}
    return make_user_dataset(f"npz:{file}", np.ascontiguousarray(x["train"]), y["train"],
                             np.ascontiguousarray(x["test"]), y["test"], names, source)
