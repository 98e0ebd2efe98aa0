"""Atomic file writes.

Every writer puts its data in a temporary file in the destination's directory (named ``.<name>.<random>.tmp``)
and then ``os.replace``s it onto the final name, so an interrupted write never leaves a half-written file
under the final name. On any exception the temporary file is deleted and the old file (if any) is untouched.
"""

from __future__ import annotations

import contextlib
import json
import os
import pathlib
import secrets
from typing import Any, Iterator


def _create_temp(path: pathlib.Path) -> pathlib.Path:
    """Create an empty, uniquely named ``.<name>.<random>.tmp`` file next to ``path`` (mode 0o666 minus umask)."""
    for _ in range(100):
        tmp = path.parent / f".{path.name}.{secrets.token_hex(4)}.tmp"
        try:
            os.close(os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666))
        except FileExistsError:
            continue
        return tmp
    raise FileExistsError(f"could not create a temporary file next to {path}")


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[pathlib.Path]:
    """Yield a temporary path next to ``path``; on success it is ``os.replace``d onto ``path``.

    For writers that want a filename (``safetensors.torch.save_file``, ``matplotlib savefig``). The parent
    directory must exist. On exception the temporary file is removed and the exception propagates.
    The temporary name ends in ``.tmp``, so writers that infer the format from the suffix need it given
    explicitly (``fig.savefig(tmp, format="png")``; ``np.save`` would append ``.npy``: pass an open file).

    Example::

        with atomic_path("out/plot.png") as tmp:
            fig.savefig(tmp, format="png")
    """
    path = pathlib.Path(path)
    tmp = _create_temp(path)
    try:
        yield tmp
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(OSError):
            tmp.unlink()
        raise


def save_figure_png(fig, path: str | os.PathLike) -> None:
    """Lay out a matplotlib figure (``tight_layout``) and write it to ``path`` as a PNG, atomically: every figure
    writer's last step. The caller closes a pyplot figure afterwards (a ``matplotlib.figure.Figure`` made
    without pyplot needs no closing)."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")


def write_synced(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` (not atomically) and fsync it, so a following rename publishes complete data."""
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """Write ``data`` to ``path`` atomically (flushed and fsynced before the rename)."""
    with atomic_path(path) as tmp:
        write_synced(tmp, data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` atomically."""
    atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> None:
    """Write ``obj`` as JSON (indent=2, keys in insertion order, trailing newline) to ``path`` atomically."""
    atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")
