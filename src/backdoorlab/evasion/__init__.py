"""Evasion: adversarial examples at inference time, their defenses, and robustness along a curve.

- ``attacks``: FGSM, PGD (l-inf, l2), adversarial patch, one-pixel attack; ``robust_accuracy``.
- ``defenses``: PGD adversarial training, JPEG compression (with BPDA), defensive distillation.
- ``hessian``: the largest eigenvalue of the input Hessian of the loss (power iteration on Hessian-vector
  products).
- ``path``: clean and robust loss/accuracy and the input-Hessian eigenvalue along a curve between two models.
"""

from .attacks import (ATTACKS, FGSM, PGD, AdversarialPatch, Attack, OnePixel, attack_loss, make_attack, margin_loss,
                      parse_eps, robust_accuracy)
from .defenses import (AdversarialBatches, AdvTrainConfig, JpegDefense, adversarial_training, defensive_distillation,
                       jpeg_compress, jpeg_pillow, train_and_save)
from .hessian import input_hessian_top_eigenvalue

__all__ = ["ATTACKS", "FGSM", "PGD", "AdversarialPatch", "Attack", "OnePixel", "attack_loss", "make_attack",
           "margin_loss", "parse_eps", "robust_accuracy", "AdversarialBatches", "AdvTrainConfig", "JpegDefense",
           "adversarial_training", "defensive_distillation", "jpeg_compress", "jpeg_pillow", "train_and_save",
           "input_hessian_top_eigenvalue"]
