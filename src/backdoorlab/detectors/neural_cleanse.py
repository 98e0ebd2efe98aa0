"""Neural Cleanse (Wang et al., IEEE S&P 2019) as a model-level detector.

The algorithm lives in :mod:`backdoorlab.defenses.neural_cleanse`, which it shares with Neural Cleanse's
unlearning repairer and the mode-connectivity sanitizer's backdoor check; this module registers its detection,
:func:`~backdoorlab.defenses.neural_cleanse.neural_cleanse`, as the detector ``neural-cleanse``.
"""

from __future__ import annotations

from ..defenses.neural_cleanse import NeuralCleanseConfig, NeuralCleanseResult, neural_cleanse
from . import DETECTORS

__all__ = ["NeuralCleanseConfig", "NeuralCleanseResult", "neural_cleanse"]

DETECTORS.register("neural-cleanse", NeuralCleanseConfig,
                   "Neural Cleanse (Wang et al. 2019): reverse-engineer the smallest trigger per label; a label "
                   "whose trigger is an outlier is the backdoor's target.", level="model")(neural_cleanse)
