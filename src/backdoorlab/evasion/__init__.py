"""Evasion: adversarial examples at inference time, their defenses, and robustness along a curve.

- attacks, one per module: ``fgsm``, ``pgd`` (l-inf, l2), ``patch`` (adversarial patch), ``one_pixel``; what
  they share (the ``Attack`` base class, losses, epsilon parsing) in ``base``; ``attacks.make_attack`` builds one
  by name; ``robustness.robust_accuracy`` measures clean and robust accuracy under any of them.
- ``defenses``: PGD adversarial training, JPEG compression (with BPDA), defensive distillation.
- ``hessian``: the largest eigenvalue of the input Hessian of the loss (power iteration on Hessian-vector
  products).
- ``path``: clean and robust loss/accuracy and the input-Hessian eigenvalue along a curve between two models.
"""

from .attacks import (ATTACKS, EVASION_ATTACKS, FGSM, PGD, AdversarialPatch, Attack, OnePixel, attack_loss,
                      make_attack, margin_loss, parse_eps, robust_accuracy)
from .defenses import (AdversarialBatches, AdvTrainConfig, JpegDefense, adversarial_training, defensive_distillation,
                       jpeg_compress, jpeg_pillow)
from .hessian import input_hessian_top_eigenvalue

__all__ = ["ATTACKS", "EVASION_ATTACKS", "FGSM", "PGD", "AdversarialPatch", "Attack", "OnePixel", "attack_loss",
           "make_attack", "margin_loss", "parse_eps", "robust_accuracy", "AdversarialBatches", "AdvTrainConfig", "JpegDefense",
           "adversarial_training", "defensive_distillation", "jpeg_compress", "jpeg_pillow",
           "input_hessian_top_eigenvalue"]
