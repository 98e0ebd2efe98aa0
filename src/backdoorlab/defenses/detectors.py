"""The detectors by name: their registry, :data:`DETECTORS`.

Each detector's module registers its entry point, as ``@DETECTORS.register(name, ConfigClass, description,
level=...)``. The ``level`` says what it looks at, and so how it is called:

- ``"model"``: is this model backdoored? ``fn(model, clean_x, num_classes, cfg, *, progress)`` returns a
  result with ``to_dict()`` (Neural Cleanse; ``backdoorlab scan``).
- ``"input"``: is this input triggered? ``cls(model, clean_x, cfg, progress=)`` is fitted on clean images and
  scores inputs (STRIP; ``backdoorlab scan`` calibrates it).
- ``"training-set"``: which training samples are poisoned? ``fn(features, labels, clean_features,
  clean_labels, **cfg.to_dict(), progress=)`` on a model's penultimate features returns a
  :class:`~.poison_detection.PoisonDetection` (activation clustering, spectral signatures; Python API).

The package ``backdoorlab.defenses`` imports every detector's module, in the order ``backdoorlab list`` shows
them.
"""

from __future__ import annotations

from ..config import Config
from ..registry import Registry

LEVELS = ("model", "input", "training-set")

DETECTORS = Registry("detector", traits={"level": "model"})


def detector_config(name: str, **options) -> Config:
    """The config dataclass of detector ``name`` built from ``options`` (validated)."""
    return DETECTORS.config(name, **options)
