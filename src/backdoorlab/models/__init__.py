"""Models: an architecture registry and safetensors checkpoints.

All models map float images in [0, 1], shape (N, C, H, W), to logits (N, num_classes), normalizing their
input with a first layer :class:`Normalize` whose mean/std are saved in the state dict.
"""

from backdoorlab.models import architectures, ensemble  # noqa: F401  (register the architectures)
from backdoorlab.models.architectures import Classifier, Normalize, init_weights
from backdoorlab.models.ensemble import Ensemble
from backdoorlab.models.checkpoint import load_checkpoint, save_checkpoint, update_checkpoint_meta
from backdoorlab.models.for_dataset import arch_args, check_model_fits, check_same_architecture, load_for, new_model
from backdoorlab.models.registry import create_model, list_models, register_model

__all__ = [
    "Classifier",
    "Ensemble",
    "Normalize",
    "arch_args",
    "check_model_fits",
    "check_same_architecture",
    "create_model",
    "init_weights",
    "list_models",
    "load_checkpoint",
    "load_for",
    "new_model",
    "register_model",
    "save_checkpoint",
    "update_checkpoint_meta",
]
