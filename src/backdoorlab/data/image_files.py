"""Which image files a class-per-sub-folder tree holds, and in which order: the one listing every reader of
image folders (the loader, the benchmark that writes an attacker's copy) shares, so that image ``i`` of a
split means the same file everywhere.

Classes are the sub-folders of a split's folder, in sorted order of their names (label ``k`` is the ``k``-th
name); within a class, the files are sorted by name; a split lists class 0's files, then class 1's, and so on.
Files whose extension is not an image format we read are ignored; hidden files and folders too.
"""

from __future__ import annotations

from pathlib import Path

from backdoorlab.errors import BackdoorlabError

#: extensions (lower case) of the files read as images; any other file is ignored
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")


def class_folders(root: Path) -> list[str]:
    """Names of the class sub-folders of ``root``, sorted; a one-line error when there are none."""
    names = sorted(p.name for p in root.iterdir() if p.is_dir() and not p.name.startswith("."))
    if not names:
        raise BackdoorlabError(f"{root}: no class folders (expected one sub-folder of images per class)")
    return names


def image_files(folder: Path) -> list[Path]:
    """The image files directly in ``folder`` (by extension, case-insensitive), sorted by name."""
    return sorted((p for p in folder.iterdir()
                   if p.suffix.lower() in IMAGE_EXTENSIONS and not p.name.startswith(".") and p.is_file()),
                  key=lambda p: p.name)


def list_split(root: Path, classes: list[str]) -> tuple[list[Path], list[int]]:
    """The image files of each class of ``classes`` under ``root`` and their labels (the class's index), class
    by class; a class folder with no image in it is a one-line error naming it."""
    paths, labels = [], []
    for label, name in enumerate(classes):
        files = image_files(root / name)
        if not files:
            raise BackdoorlabError(f"{root / name}: class {name!r} has no images "
                                   f"(expected files ending in {', '.join(IMAGE_EXTENSIONS)})")
        paths += files
        labels += [label] * len(files)
    return paths, labels
