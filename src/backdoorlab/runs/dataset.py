"""The data set a command runs on: a built-in set by name, or a user's images (``folder:PATH``, ``npz:PATH``) read
at the size asked for (``--image-size``, with the method ``--resize`` and ``--resize-defense``) or else, for a
command given a checkpoint, as that checkpoint's data was read (its size, method and defense), so that a user
names them once, when training."""

from __future__ import annotations

from ..data import load_dataset
from ..data.image_size import check_image_size, parse_image_size
from ..data.registry import split_path_name
from ..errors import BackdoorlabError
from ..models.checkpoint import read_meta


def checkpoint_image_size(model_dir: str) -> tuple[int, int] | None:
    """The (H, W) a checkpoint takes: its ``arch_args.input_size`` (an ensemble's members'), else its sidecar's
    ``input_shape``; None when it records neither."""
    meta = read_meta(model_dir)
    args = meta["arch_args"]
    size = args.get("input_size") or (args.get("member_args") or {}).get("input_size")
    if size is None and isinstance(meta.get("input_shape"), list) and len(meta["input_shape"]) == 3:
        size = meta["input_shape"][1:]
    try:
        return check_image_size(size)
    except BackdoorlabError as e:
        raise BackdoorlabError(f"checkpoint {model_dir}: {e}") from None


def checkpoint_resizing(model_dir: str) -> tuple[str | None, str | None]:
    """(resize method, resize defense) the checkpoint's data set was read with, from its sidecar's
    ``data_source`` (None for each it does not record: the defaults)."""
    source = read_meta(model_dir).get("data_source") or {}
    return source.get("resize"), source.get("resize_defense")


def run_dataset(name: str, data_dir=None, image_size: str | tuple[int, int] | None = None,
                model_dir: str | None = None, resize: str | None = None, resize_defense: str | None = None):
    """Load data set ``name``. ``image_size`` (``"H[,W]"`` text or (H, W)), ``resize`` and ``resize_defense``
    are for ``folder:``/``npz:`` sets only; without them such a set is read as ``model_dir``'s checkpoint was
    (its size, resize method and defense) when a checkpoint is given, else at its images' most common size with
    the default method."""
    size = parse_image_size(image_size) if isinstance(image_size, str) else check_image_size(image_size)
    if model_dir is not None and split_path_name(name) is not None:
        if size is None:
            size = checkpoint_image_size(model_dir)
        if resize is None and resize_defense is None:
            resize, resize_defense = checkpoint_resizing(model_dir)
    return load_dataset(name, data_dir, image_size=size, resize=resize, resize_defense=resize_defense)
