"""The images a checkpoint's sidecar implies, each in one call (both re-exported by the package,
``from backdoorlab import ...``):

- :func:`checkpoint_clean_budget`: the clean budget the checkpoint's defender holds. It must come from the
  held-out pool that this checkpoint was trained without (its sidecar's ``holdout.size``, else the data set's
  default pool): a budget drawn from another pool could hold images the model was trained on, poisoned ones
  among them, and no defense measured on it would be fair. This is the budget every command (``repair``,
  ``sanitize``, ``scan``, ...) draws for the same ``--clean-budget`` and ``--budget-seed``.
- :func:`triggered_test_set`: the test images a backdoor applies to, stamped with its trigger and labelled with
  the attacker's targets: the inputs an attack success rate counts, ready to evaluate an input-level detector
  (STRIP) or a repaired model with. The query-based reactivation attack measures on it.

The backdoor a checkpoint records is :func:`backdoorlab.attacks.backdoor_of` (``backdoorlab.backdoor_of``).
"""

from __future__ import annotations

from typing import Mapping

import torch

from .attacks.backdoor import triggers_of
from .budget import CleanBudget, clean_budget
from .errors import BackdoorlabError
from .models.sidecar import holdout_size
from .tensors import to_float


def checkpoint_clean_budget(dataset, meta: Mapping, size: int = 1000, seed: int = 0) -> CleanBudget:
    """The clean budget of ``size`` images (the command line's ``--clean-budget``, default 1,000) that the
    defender of the checkpoint whose sidecar is ``meta`` holds: a seeded draw (``seed``, the command line's
    ``--budget-seed``) from the held-out pool the checkpoint was trained without, of the loaded ``dataset`` the
    checkpoint was trained on. A budget larger than the pool, or a malformed ``holdout`` field, is a one-line
    error."""
    return clean_budget(dataset, size, seed=seed, holdout=holdout_size(meta, dataset.name))


def triggered_test_set(dataset, backdoor) -> tuple[torch.Tensor, torch.Tensor]:
    """The test images of ``dataset`` that ``backdoor`` applies to (for all-to-one, those not already of the
    target; every part of a multi-target backdoor in turn), with its trigger stamped, as float images in [0, 1]
    (N, C, H, W), and the labels the attacker wants for them. The trigger's randomness (a dynamic trigger's
    place) is seeded, so every call gives the same set. A backdoor with no trigger to stamp (triggerless, a
    fault in the weights), no backdoor at all (``backdoor_of`` of a clean model is None), or a set left empty
    (every test image already of the target) is a one-line error."""
    if backdoor is None:
        raise BackdoorlabError("a triggered test set needs a backdoor, got None (the checkpoint records no "
                               "planted attack)")
    g = torch.Generator().manual_seed(0)
    xs, ys = [], []
    for p in triggers_of(backdoor, "a triggered test set"):
        keep = p.eligible(dataset.test_y)
        if keep.any():
            xs.append(p.trigger.apply(to_float(dataset.test_x[keep]), training=False, generator=g).clamp(0, 1))
            ys.append(p.target_labels(dataset.test_y[keep], dataset.num_classes))
    if not xs:
        raise BackdoorlabError("no test image can carry the trigger (all are of the target class)")
    return torch.cat(xs), torch.cat(ys)
