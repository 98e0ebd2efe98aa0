"""STRIP's batching: sized for the model's device by default, set by ``batch_size`` when given, and never a
change in the entropies."""

import numpy as np
import pytest
import torch

from backdoorlab.detectors.strip import (ACCELERATOR_IMAGES_PER_PASS, CPU_IMAGES_PER_PASS, StripConfig,
                                         StripDetector, strip_batch_size, strip_entropy)
from backdoorlab.errors import BackdoorlabError


def test_the_default_batch_is_sized_for_the_device():
    cpu, gpu = torch.device("cpu"), torch.device("cuda")
    assert strip_batch_size(StripConfig(), cpu) == CPU_IMAGES_PER_PASS // 100  # 100 overlays per input
    assert strip_batch_size(StripConfig(), gpu) == ACCELERATOR_IMAGES_PER_PASS // 100
    assert strip_batch_size(StripConfig(), gpu) > strip_batch_size(StripConfig(), cpu)
    assert strip_batch_size(StripConfig(n_overlays=10 * CPU_IMAGES_PER_PASS), cpu) == 1  # at least one input
    assert strip_batch_size(StripConfig(batch_size=7), cpu) == strip_batch_size(StripConfig(batch_size=7), gpu) == 7
    with pytest.raises(BackdoorlabError, match="batch_size >= 1 .* got 0"):
        StripConfig(batch_size=0)
    assert StripConfig.from_options({"batch_size": "none"}, "strip").batch_size is None


def test_the_default_sends_forward_passes_of_a_few_hundred_images_on_a_cpu(digits_suspect, digits_budget):
    model = digits_suspect[0]
    seen = []
    handle = model.register_forward_pre_hook(lambda module, args: seen.append(len(args[0])))
    try:
        strip_entropy(model, digits_budget.x[:5], digits_budget.x, StripConfig())
    finally:
        handle.remove()
    per_input = StripConfig().n_overlays
    assert sum(seen) == 5 * per_input and max(seen) <= CPU_IMAGES_PER_PASS and max(seen) >= per_input
    assert seen == [per_input * strip_batch_size(StripConfig(), torch.device("cpu"))] * (len(seen) - 1) + seen[-1:]


def test_entropies_do_not_depend_on_the_batch_size(digits, digits_suspect, digits_budget):
    from backdoorlab import backdoor_of, triggered_test_set

    model, meta, _ = digits_suspect
    triggered, _ = triggered_test_set(digits, backdoor_of(meta))
    x = torch.cat([digits_budget.x[:7].float() / 255, triggered[:6]])  # clean and triggered inputs, 13 in all
    runs = {b: strip_entropy(model, x, digits_budget.x, StripConfig(n_overlays=40, batch_size=b))
            for b in (1, 5, 13, None)}
    for b, entropies in runs.items():
        np.testing.assert_allclose(entropies, runs[1], rtol=0, atol=1e-5, err_msg=f"batch_size={b}")
    # the comparison can fail: other overlays (another seed) move the entropies by far more than the tolerance
    other = strip_entropy(model, x, digits_budget.x, StripConfig(n_overlays=40, batch_size=5, seed=1))
    assert np.abs(other - runs[1]).max() > 1e-3
    assert runs[1][7:].mean() < runs[1][:7].mean()  # and they mean something: triggered inputs stay certain


def test_the_detector_fits_the_same_threshold_whatever_the_batch(digits_suspect, digits_budget):
    model = digits_suspect[0]
    fits = [StripDetector(model, digits_budget.x, StripConfig(n_overlays=20, batch_size=b), progress=False)
            .fit(digits_budget.x[:40]) for b in (3, None)]
    assert abs(fits[0].threshold - fits[1].threshold) < 1e-5
    assert fits[1].summary()["config"]["batch_size"] is None  # recorded as asked: sized for the device
