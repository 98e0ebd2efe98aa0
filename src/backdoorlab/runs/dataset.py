"""The data set a command runs on: a built-in set by name, or a user's images (``folder:PATH``, ``npz:PATH``) read
at the size asked for (``--image-size``) or else, for a command given a checkpoint, at the size that checkpoint
takes, so that a user names the size once, when training."""

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


def run_dataset(name: str, data_dir=None, image_size: str | tuple[int, int] | None = None,
                model_dir: str | None = None):
    """Load data set ``name``. ``image_size`` (``"H[,W]"`` text or (H, W)) is for ``folder:``/``npz:`` sets only;
    without it such a set is read at ``model_dir``'s checkpoint size when a checkpoint is given, else at its
    images' most common size."""
    size = parse_image_size(image_size) if isinstance(image_size, str) else check_image_size(image_size)
    if size is None and model_dir is not None and split_path_name(name) is not None:
        size = checkpoint_image_size(model_dir)
    return load_dataset(name, data_dir, image_size=size)
