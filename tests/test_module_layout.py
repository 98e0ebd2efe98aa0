"""Modules split into one idea per file keep their old import paths: the public names other modules, tests and
benchmarks use are still importable from where they were, and are the same objects as in their new homes."""

import numpy as np
import torch
from PIL import Image


def test_neural_cleanse_package_offers_the_names_of_the_former_module():
    from backdoorlab.defenses import neural_cleanse as nc
    from backdoorlab.defenses.neural_cleanse import detection, growth, reverse, trigger, unlearning

    assert nc.neural_cleanse is detection.neural_cleanse and nc.anomaly_indices is detection.anomaly_indices
    assert nc.reverse_trigger is reverse.reverse_trigger and nc.ReversedTrigger is trigger.ReversedTrigger
    assert nc.complete_trigger is growth.complete_trigger and nc.grow_trigger is growth.grow_trigger
    assert nc.nc_unlearning is unlearning.nc_unlearning and nc.UnlearningConfig is unlearning.UnlearningConfig
    for name in nc.__all__:
        assert hasattr(nc, name), name


def test_save_png_writes_the_image_upscaled(tmp_path):
    from backdoorlab.png import save_png

    image = torch.tensor([[[0.0, 1.0], [0.5, 0.25]]])  # (1, 2, 2), greyscale
    save_png(image, tmp_path / "x.png", scale=3)
    with Image.open(tmp_path / "x.png") as im:
        arr = np.asarray(im)
    assert arr.shape == (6, 6) and arr[0, 0] == 0 and arr[0, 5] == 255 and arr[5, 0] == 128
    save_png(torch.rand(3, 4, 5), tmp_path / "rgb.png", scale=1)
    with Image.open(tmp_path / "rgb.png") as im:
        assert im.size == (5, 4) and im.mode == "RGB"


def test_evasion_attacks_module_offers_the_names_of_the_former_module():
    from backdoorlab.evasion import attacks, base, fgsm, one_pixel, patch, pgd, robustness

    assert attacks.PGD is pgd.PGD and attacks.FGSM is fgsm.FGSM and attacks.OnePixel is one_pixel.OnePixel
    assert attacks.AdversarialPatch is patch.AdversarialPatch and attacks.robust_accuracy is robustness.robust_accuracy
    for name in ("Attack", "NORMS", "LOSSES", "parse_eps", "eval_mode", "frozen", "margin_loss", "attack_loss"):
        assert getattr(attacks, name) is getattr(base, name), name
