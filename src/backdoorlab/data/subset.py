"""Class subsets: ``BASE[CLASSES]`` (``mnist[0-4]``, ``mnist[5-9]``, ``cifar10[0,1,8,9]``), some classes of a data
set as a data set of their own, for a teacher's task and a student's (``backdoorlab transfer``) or any command.

The subset keeps BASE's images of those classes, training and test, relabelled 0..k-1 in the order of the class
indices, with BASE's class names. Its held-out clean pool is BASE's pool restricted to those classes, so that a
subset never trains on an image any defender of BASE (or of another subset of it) draws a budget from: the
training images are laid out so that the library's one split (:func:`backdoorlab.budget.holdout_split` of the
subset's size with a pool of that many images) sets aside exactly those. In that layout the training part
(outside the pool) keeps BASE's order, and so does the pool; the pool's size is recorded for the accessors
(:func:`~backdoorlab.data.registry.record_content_traits`), as a user's data set's is. The other traits
(architecture, training recipe, augmentations) are BASE's.
"""

from __future__ import annotations

import torch

from backdoorlab.data.datasets import Dataset, make_dataset
from backdoorlab.data.registry import canonical_name, classes_text, default_holdout, record_content_traits
from backdoorlab.errors import BackdoorlabError


def class_subset(base: Dataset, classes: list[int]) -> Dataset:
    """The data set of ``base``'s classes ``classes`` (sorted label indices of ``base``), named
    ``BASE[CLASSES]`` canonically; see the module docstring. Fewer than two classes, an index ``base`` does not
    have, or a class with no image outside (or inside) the pool is a one-line error."""
    from backdoorlab.budget import holdout_split  # budget imports the data package: not at module level

    name = canonical_name(f"{base.name}[{classes_text(classes)}]")
    k = base.num_classes
    bad = [c for c in classes if not 0 <= c < k]
    if bad:
        raise BackdoorlabError(f"data set {name!r}: {base.name} has no class {bad[0]} (its classes are 0..{k - 1}: "
                               f"{', '.join(base.class_names)})")
    if len(classes) < 2:
        raise BackdoorlabError(f"data set {name!r}: a class subset needs at least two classes, got {len(classes)}")
    relabel = torch.full((k,), -1, dtype=torch.long)
    relabel[torch.tensor(classes)] = torch.arange(len(classes))
    train_idx, pool_idx = holdout_split(len(base.train_y), default_holdout(base.name))
    keep_train = train_idx[relabel[base.train_y[train_idx]] >= 0]
    keep_pool = pool_idx[relabel[base.train_y[pool_idx]] >= 0]
    if not len(keep_train) or not len(keep_pool):
        raise BackdoorlabError(f"data set {name!r}: its classes have {len(keep_train)} training images outside "
                               f"{base.name}'s held-out pool and {len(keep_pool)} in it; both must be > 0")
    n, pool = len(keep_train) + len(keep_pool), len(keep_pool)
    train_pos, pool_pos = holdout_split(n, pool)
    order = torch.empty(n, dtype=torch.long)
    order[train_pos], order[pool_pos] = keep_train, keep_pool
    test_keep = relabel[base.test_y] >= 0
    source = {"kind": "subset", "of": base.name, "classes": list(classes),
              "images": {"train": n, "test": int(test_keep.sum())}, "holdout": pool}
    if base.source is not None:
        source["of_source"] = base.source
    subset = make_dataset(name, base.train_x[order].numpy(), relabel[base.train_y[order]].numpy(),
                          base.test_x[test_keep].numpy(), relabel[base.test_y[test_keep]].numpy(),
                          [base.class_names[c] for c in classes], source=source)
    subset.parent = base
    record_content_traits(name, {"holdout": pool})
    return subset
