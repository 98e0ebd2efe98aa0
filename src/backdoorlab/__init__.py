"""backdoorlab: plant, measure, detect and remove backdoors in neural networks.

The calls a user needs first, without knowing where they live in the package::

    import backdoorlab as bl

    ds = bl.load_dataset("mnist")
    model, meta = bl.load_checkpoint("runs/suspect")
    budget = bl.checkpoint_clean_budget(ds, meta, 1000)    # the defender's clean images (.x uint8, .y)
    backdoor = bl.backdoor_of(meta)                         # the planted backdoor, None for a clean model
    x, y = bl.triggered_test_set(ds, backdoor)              # stamped test images and the attacker's labels
    bl.to_float(ds.test_x)                                  # uint8 images -> float in [0, 1]

They are imported on first use (PEP 562's module ``__getattr__``), so ``import backdoorlab`` stays light: the
command line's ``--help`` and ``--version`` do not wait for torch to load.
"""

from __future__ import annotations

import importlib

__version__ = "0.1.0"

# public name -> the module it lives in
_EXPORTS = {
    "load_dataset": "backdoorlab.data",
    "load_checkpoint": "backdoorlab.models",
    "checkpoint_clean_budget": "backdoorlab.checkpoint_data",
    "triggered_test_set": "backdoorlab.checkpoint_data",
    "backdoor_of": "backdoorlab.attacks",
    "to_float": "backdoorlab.tensors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str):
    """Import an exported name from its module on first use (and keep it, so later lookups are plain)."""
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'backdoorlab' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted({*globals(), *_EXPORTS})
