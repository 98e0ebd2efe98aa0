"""How far a repairer may go, chosen on clean data only: the rule shared by the repairers that act by degrees
(fine-pruning and ANP prune more and more neurons, weight noise tries larger and larger scales).

The clean budget is split into a fit part and a validation slice (:func:`split_validation`); the steps are
tried from the mildest up, and the last one kept is the one before the first whose accuracy on the validation
slice falls more than ``max_accuracy_drop`` below the suspect's (:func:`last_within_drop`). Choosing by the
backdoor's success instead would use the trigger, which the defender does not have.
"""

from __future__ import annotations

from typing import Callable, Iterable, TypeVar

from tqdm.auto import tqdm

from ..budget import CleanBudget
from ..errors import BackdoorlabError

Step = TypeVar("Step")


def split_validation(budget: CleanBudget, fraction: float, minimum: int = 20) -> tuple[CleanBudget, CleanBudget]:
    """(fit part, validation slice) of a budget, the slice being ``fraction`` of it (at least ``minimum``)."""
    n_val = max(minimum, int(round(fraction * len(budget))))
    if len(budget) - n_val < minimum:
        raise BackdoorlabError(f"clean budget of {len(budget)} images is too small: this defense needs at least "
                               f"{n_val + minimum} (a validation slice of {n_val} plus images to work with)")
    return budget.split(n_val)


def last_within_drop(steps: Iterable[Step], score: Callable[[Step], float], base: float, max_drop: float, *,
                     progress: bool = False, desc: str | None = None) -> tuple[Step | None, list[tuple[Step, float]]]:
    """Score ``steps`` in order, ``score(step)`` being the validation accuracy after it, until one scores more
    than ``max_drop`` below ``base`` (the suspect's validation accuracy). Returns (the last step before that
    one, or None when the first already does; [(step, accuracy)] of every step scored, that one included)."""
    kept, scored = None, []
    for step in tqdm(steps, desc=desc, disable=not progress, leave=False):
        acc = score(step)
        scored.append((step, acc))
        if acc < base - max_drop - 1e-12:
            break
        kept = step
    return kept, scored
