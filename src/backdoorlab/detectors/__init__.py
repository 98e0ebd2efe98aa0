"""The detectors by name: their registry, :data:`DETECTORS`, and one module per detector.

Each detector's module registers its entry point, as ``@DETECTORS.register(name, ConfigClass, description,
level=...)``. The ``level`` says what it looks at, and so how it is called:

- ``"model"``: is this model backdoored? ``fn(model, clean_x, num_classes, cfg, *, progress)`` returns a
  result with ``to_dict()`` (Neural Cleanse, :mod:`.neural_cleanse`; ``backdoorlab scan``).
- ``"input"``: is this input triggered? ``cls(model, clean_x, cfg, progress=)`` is fitted on clean images and
  scores inputs (STRIP, :mod:`.strip`; ``backdoorlab scan`` calibrates it).
- ``"training-set"``: which training samples are poisoned? ``fn(features, labels, clean_features,
  clean_labels, **cfg.to_dict(), progress=)`` on a model's penultimate features returns a
  :class:`~.poison_detection.PoisonDetection` (:mod:`.activation_clustering`, :mod:`.spectral_signatures`;
  Python API).

Importing the package imports every module in it (:func:`~backdoorlab.registry.import_plugins`), so adding a detector is one new
module here (and its test); nothing keeps a list of them. The registry lists the detectors by level (model,
input, training set), then by name: neural-cleanse, strip, activation-clustering, spectral-signatures.
"""

from __future__ import annotations

from ..config import Config
from ..registry import Entry, Registry, import_plugins

LEVELS = ("model", "input", "training-set")


def _listing_order(entry: Entry):
    level = entry.traits["level"]
    return (LEVELS.index(level) if level in LEVELS else len(LEVELS)), entry.name


DETECTORS = Registry("detector", traits={"level": "model"}, order=_listing_order)


def detector_config(name: str, **options) -> Config:
    """The config dataclass of detector ``name`` built from ``options`` (validated)."""
    return DETECTORS.config(name, **options)


import_plugins(__name__)  # every module of the package: each registers its detector(s)
