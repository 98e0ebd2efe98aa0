"""Where poisoned images go in a copy of an image folder, and under which names, so that none of them lands in the
held-out clean pool that backdoorlab draws a defender's budget from.

A loaded folder lists its training images class by class, each class's files sorted by name
(data/image_files.py), and the held-out pool is a fixed set of positions in that listing (budget.holdout_split).
A poisoned image moves to its target label's folder, which shifts every position; so the names of the poisoned
files are chosen, once it is known which files move where, to put each of them at a position outside the pool:
a class folder's kept files keep their names and order, and each poisoned file is named to sort right after the
kept file before its slot (``STEM_0001.png``: the kept file's stem and a counter). :func:`plan_names` returns
the names; whoever writes the folder checks the positions again on the written listing.
"""

from __future__ import annotations

from pathlib import PurePath

POISON_SUFFIX = ".png"  # poisoned images are written losslessly, whatever the source's format


def _between(name: str, prev: str, nxt: str | None, taken: set[str]) -> bool:
    return name not in taken and prev < name and (nxt is None or name < nxt)


def _name_after(prev: str, nxt: str | None, counter: int, taken: set[str]) -> str | None:
    """A file name that sorts strictly between ``prev`` and ``nxt`` (None: no upper bound), not in ``taken``."""
    stem = PurePath(prev).stem
    for name in (f"{stem}_{counter:04d}{POISON_SUFFIX}", f"{prev}_{counter:04d}{POISON_SUFFIX}"):
        if _between(name, prev, nxt, taken):
            return name
    return None


def plan_class(kept: list[str], incoming: int, start: int, pool: set[int]) -> list[str]:
    """Names for ``incoming`` poisoned files in a class folder whose kept files are ``kept`` (sorted) and whose
    listing starts at position ``start``: each put at the next position outside ``pool`` after the first kept
    file (in the pool only when the kept files run out first)."""
    if not kept:
        return [f"poisoned_{i:05d}{POISON_SUFFIX}" for i in range(incoming)]
    taken = set(kept)
    names: list[str] = []
    k, prev, counter = 1, kept[0], 0  # the first slot is always a kept file: nothing sorts before it safely
    position = start + 1
    while len(names) < incoming:
        nxt = kept[k] if k < len(kept) else None
        if nxt is not None and position in pool:
            prev, k, counter = nxt, k + 1, 0
        else:
            counter += 1
            name = _name_after(prev, nxt, counter, taken)
            if name is None:  # no name fits before the next kept file: take it and try after it
                prev, k, counter = nxt, k + 1, 0
            else:
                names.append(name)
                taken.add(name)
        position += 1
    return names


def plan_names(kept: dict[int, list[str]], incoming: dict[int, int], pool: set[int]) -> dict[int, list[str]]:
    """For each class label (in label order) with incoming poisoned files, their names (see the module's
    docstring). ``kept``: each class's kept file names, sorted; ``incoming``: how many poisoned files each class
    receives; ``pool``: the held-out pool's positions in the training listing."""
    names, start = {}, 0
    for label in sorted(kept):
        if incoming.get(label):
            names[label] = plan_class(kept[label], incoming[label], start, pool)
        start += len(kept[label]) + incoming.get(label, 0)
    return names
