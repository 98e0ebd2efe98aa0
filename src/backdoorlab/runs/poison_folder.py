"""``backdoorlab poison-folder``: a poisoned copy of an image folder whose poisoned images look like clean ones at
full size and show the trigger only after the victim's pipeline shrinks them (the image-scaling backdoor of
Quiring and Rieck, DLS 2020; the attack in attacks/image_scaling.py).

For a fraction of the training images outside the folder's held-out clean pool, among those the backdoor may
relabel: the source S is the image at full size; the target T is S resized as the victim will resize it
(``--scale-to``, ``--resize``) with the trigger stamped; the attack image A, within ``eps`` of T after that
resize, is written in the folder of the backdoor's label for it (BadNets: the target label), under a name that
keeps it out of the held-out pool (attacks/folder_names.py). Every other file is copied byte for byte, the
test split included. The victim then trains on the copy with ``backdoorlab train --dataset folder:OUT
--image-size H,W --resize METHOD``; ``backdoorlab evaluate --poison-record OUT`` measures the backdoor.

``OUT/poisoning.json`` is the attacker's record (the loader reads only the class folders): the settings, the
backdoor (as a sidecar records one), each poisoned file with its source, how far the attack images are from their
sources at full size (PSNR, largest change) and from the targets after the resize.
"""

from __future__ import annotations

import math
import shutil
import time
from pathlib import Path

import numpy as np
import torch
from tqdm.auto import tqdm

from .. import __version__
from ..attacks.folder_names import plan_names
from ..attacks.image_scaling import check_attack_scaling, psnr, scaled, scaling_attack
from ..budget import holdout_split
from ..data.folder import GREY_MODES, decode, list_folder
from ..data.image_files import list_split
from ..data.image_size import check_image_size
from ..data.resize import resize_float
from ..data.user_traits import user_holdout
from ..errors import BackdoorlabError
from ..io import atomic_write_json

RECORD = "poisoning.json"
ATTACK = "image-scaling"


def image_channels(paths: list[Path]) -> int:
    """1 when every image is grey (read from the files' headers), else 3: the loader's rule."""
    from PIL import Image

    for path in paths:
        try:
            with Image.open(path) as image:
                if image.mode not in GREY_MODES:
                    return 3
        except (OSError, ValueError, SyntaxError) as e:
            raise BackdoorlabError(f"{path}: not a readable image ({e})") from None
    return 1


def folder_traits(src: str) -> tuple[int, int]:
    """(channels, number of classes) of the image folder ``src`` with train/ and test/ (the loader's rules)."""
    root = Path(src).expanduser().resolve()
    if not (root / "train").is_dir():
        raise BackdoorlabError(f"{root}: no train/ folder (poison-folder needs SRC/train/CLASS/* and SRC/test/CLASS/*)")
    classes, splits, _ = list_folder(root)
    return image_channels(splits["train"][0]), len(classes)


def image_size(path: Path) -> tuple[int, int]:
    """(H, W) of the image at ``path``, read from its header."""
    from PIL import Image

    try:
        with Image.open(path) as image:
            return image.height, image.width
    except (OSError, ValueError, SyntaxError) as e:
        raise BackdoorlabError(f"{path}: not a readable image ({e})") from None


def read_chw(path: Path, channels: int) -> torch.Tensor:
    """The image at ``path`` as uint8 (C, H, W) with ``channels`` channels (grey repeated to RGB)."""
    image = decode(path)
    if image.ndim == 2:
        image = image[..., None].repeat(channels, axis=2)
    return torch.from_numpy(np.ascontiguousarray(image.transpose(2, 0, 1)))


def write_png(image: torch.Tensor, path: Path) -> None:
    """Write a uint8 (C, H, W) image as a PNG."""
    from PIL import Image

    array = image.numpy()
    Image.fromarray(array[0] if array.shape[0] == 1 else array.transpose(1, 2, 0)).save(path, format="PNG")


def choose_poisoned(labels: torch.Tensor, backdoor, rate: float, pool: torch.Tensor, seed: int) -> torch.Tensor:
    """Sorted positions of the images to poison: ``round(rate * n)`` of the n training images outside the pool
    (their positions in the source listing), drawn (seeded) among those the backdoor relabels."""
    outside = torch.ones(len(labels), dtype=torch.bool)
    outside[pool] = False
    candidates = torch.nonzero(backdoor.eligible(labels) & outside).flatten()
    want = int(round(rate * int(outside.sum())))
    if want > len(candidates):
        raise BackdoorlabError(f"poison rate {rate} asks for {want} poisoned images but only {len(candidates)} "
                               f"training images outside the held-out pool are eligible")
    if want == 0:
        raise BackdoorlabError(f"poison rate {rate} poisons no image of {int(outside.sum())}; raise --poison-rate")
    pick = torch.randperm(len(candidates), generator=torch.Generator().manual_seed(seed))[:want]
    return candidates[pick].sort().values


def poison_folder_run(src: str, out: str, backdoor, size, method: str = "bilinear", eps: float = 1 / 255,
                      poison_rate: float = 0.1, seed: int = 0, progress: bool = True) -> dict:
    """Write the poisoned copy of the folder ``src`` to ``out`` (see the module's docstring) and return the
    record also written to ``out/poisoning.json``. ``backdoor``: what the images are poisoned with (a
    :class:`~backdoorlab.attacks.Backdoor`: trigger and label mapping); ``size`` (h, w): the size the victim
    resizes to; ``method``: the victim's resize (nearest or bilinear); ``eps``: the attack's bound on the resized
    image (pixel units in [0, 1])."""
    tick = time.time()
    size = check_image_size(tuple(size))
    if not 0 < poison_rate <= 1:
        raise BackdoorlabError(f"--poison-rate must lie in (0, 1], got {poison_rate}")
    if not 0 <= eps < 1:
        raise BackdoorlabError(f"--eps must lie in [0, 1) (pixel units: 1/255 is one level), got {eps}")
    root = Path(src).expanduser().resolve()
    target = Path(out).expanduser().resolve()
    if not root.is_dir():
        raise BackdoorlabError(f"{root}: {'not a folder' if root.exists() else 'no such folder'} (poison-folder "
                               f"needs a folder with train/ and test/)")
    if target.exists():
        raise BackdoorlabError(f"{target} already exists; remove it or choose another folder")
    if target == root or root in target.parents:
        raise BackdoorlabError(f"{target}: the poisoned copy must be written outside {root}")
    classes, splits, split = list_folder(root)
    if split is not None:
        raise BackdoorlabError(f"{root}: poison-folder needs train/ and test/ folders (a folder of classes alone is "
                               f"split by the loader, and poisoned images would move between the splits)")
    paths, labels = list_split(root / "train", classes)
    labels_t = torch.tensor(labels)
    backdoor.check(len(classes))
    if len(backdoor.parts) != 1:
        raise BackdoorlabError("poison-folder hides one trigger; a backdoor of several triggers is not supported")
    n = len(paths)
    _, pool = holdout_split(n, user_holdout(n))
    chosen = choose_poisoned(labels_t, backdoor, poison_rate, pool, seed)
    new_labels = backdoor.target_labels(labels_t[chosen], len(classes))
    channels = image_channels(paths)
    for part in backdoor.parts:  # a trigger that does not fit the resized images fails before any work
        part.trigger.apply(torch.zeros(1, channels, *size))

    moved = set(chosen.tolist())
    kept = {k: sorted(paths[i].name for i in range(n) if labels[i] == k and i not in moved)
            for k in range(len(classes))}
    incoming = {k: int((new_labels == k).sum()) for k in range(len(classes))}
    names = plan_names(kept, incoming, set(pool.tolist()))

    for i in chosen.tolist():  # every poisoned image must shrink enough: checked before anything is written
        check_attack_scaling(image_size(paths[i]), size, method)
    partial = target.with_name(target.name + ".partial")
    if partial.exists():
        shutil.rmtree(partial)
    try:
        record = _write(root, target, partial, classes, paths, labels, chosen, new_labels, names, backdoor, size,
                        method, eps, channels, seed, progress)
    except BaseException:
        shutil.rmtree(partial, ignore_errors=True)
        raise
    record.update(poison_rate=poison_rate, seed=seed, seconds=round(time.time() - tick, 1))
    atomic_write_json(partial / RECORD, record)
    partial.rename(target)
    return record


def _write(root, target, partial, classes, paths, labels, chosen, new_labels, names, backdoor, size, method, eps,
           channels, seed, progress) -> dict:
    """Write the copy into ``partial``; the record (without the run's settings and time)."""
    n = len(paths)
    moved = set(chosen.tolist())
    _, pool = holdout_split(n, user_holdout(n))
    shutil.copytree(root / "test", partial / "test")
    for k, name in enumerate(classes):
        (partial / "train" / name).mkdir(parents=True)
    for i in range(n):
        if i not in moved:
            shutil.copyfile(paths[i], partial / "train" / classes[labels[i]] / paths[i].name)

    generator = torch.Generator().manual_seed(seed)
    slot = {k: 0 for k in names}
    poisoned, stats = [], {"psnr": [], "linf": [], "changed": [], "scaled_error": []}
    for j, i in enumerate(tqdm(chosen.tolist(), desc="image-scaling attack", disable=not progress)):
        source = read_chw(paths[i], channels)[None]
        small = resize_float(source.to(torch.float64), size, method).round().clamp(0, 255) / 255
        label = int(new_labels[j])
        part = backdoor.parts[0]
        goal = part.trigger.apply(small.float(), training=True, generator=generator).to(torch.float64).clamp(0, 1)
        attack = scaling_attack(source.to(torch.float64) / 255, goal, method, eps)
        file = partial / "train" / classes[label] / names[label][slot[label]]
        slot[label] += 1
        write_png(attack[0], file)
        diff = (attack.to(torch.int16) - source.to(torch.int16)).abs()
        stats["psnr"].append(float(psnr(attack, source)[0]))
        stats["linf"].append(int(diff.max()))
        stats["changed"].append(float((diff > 0).to(torch.float64).mean()))
        stats["scaled_error"].append(float((scaled(attack, size, method) - goal).abs().max() * 255))
        poisoned.append({"source": str(paths[i].relative_to(root)), "file": str(file.relative_to(partial)),
                         "label": labels[i], "poisoned_label": label})

    written, _ = list_split(partial / "train", classes)
    position = {p.relative_to(partial).as_posix(): k for k, p in enumerate(written)}
    pool_set = set(pool.tolist())
    in_pool = sum(position[Path(p["file"]).as_posix()] in pool_set for p in poisoned)
    record = {
        "attack": ATTACK, "version": __version__, "source": str(root), "out": str(target),
        "scale_to": list(size), "resize": method, "eps": eps,
        "backdoor": backdoor.to_dict(), "classes": classes, "training_images": n, "holdout": len(pool),
        "poisoned_count": len(poisoned), "poisoned_in_pool": in_pool,
        "distance": {
            # an image the trigger leaves as it was (its read pixels already the trigger's) has no PSNR: counted apart
            "psnr_db": _summary([v for v in stats["psnr"] if math.isfinite(v)]),
            "unchanged_images": sum(not math.isfinite(v) for v in stats["psnr"]),
            "max_change_levels": _summary(stats["linf"]),
            "changed_pixels": _summary(stats["changed"]),
            "scaled_error_levels": _summary(stats["scaled_error"]),
        },
        "poisoned": poisoned,
    }
    return record


def _summary(values: list[float]) -> dict | None:
    """Mean, min and max of ``values`` (None when there are none)."""
    if not values:
        return None
    a = np.asarray(values, dtype=np.float64)
    return {"mean": round(float(a.mean()), 4), "min": round(float(a.min()), 4), "max": round(float(a.max()), 4)}


def read_record(path: str) -> dict:
    """The record of a poisoned copy: ``path`` is the copy's folder or its ``poisoning.json``; a one-line error
    when it is neither or does not parse."""
    import json

    file = Path(path).expanduser()
    if file.is_dir():
        file = file / RECORD
    if not file.is_file():
        raise BackdoorlabError(f"{file}: no such file (--poison-record takes a folder written by poison-folder, or its "
                               f"{RECORD})")
    try:
        record = json.loads(file.read_text())
    except (OSError, ValueError) as e:
        raise BackdoorlabError(f"{file}: not a poisoning record ({e})") from None
    if not isinstance(record, dict) or not isinstance(record.get("backdoor"), dict) or \
            not isinstance(record.get("poisoned"), list):
        raise BackdoorlabError(f"{file}: not a poisoning record (needs 'backdoor' and 'poisoned')")
    return record
