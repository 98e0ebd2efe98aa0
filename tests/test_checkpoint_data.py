"""The public package's one-call API (``backdoorlab.checkpoint_clean_budget``, ``backdoor_of``,
``triggered_test_set``, ``to_float``, ...): exported lazily, and giving what the commands themselves use."""

import subprocess
import sys

import pytest
import torch

import backdoorlab
from backdoorlab.errors import BackdoorlabError


def test_the_package_exports_each_name_from_its_home_without_importing_torch_first():
    from backdoorlab import attacks, checkpoint_data, data, models, tensors

    homes = {"checkpoint_clean_budget": checkpoint_data, "triggered_test_set": checkpoint_data,
             "backdoor_of": attacks, "to_float": tensors, "load_dataset": data, "load_checkpoint": models}
    assert set(homes) | {"__version__"} == set(backdoorlab.__all__)
    for name, home in homes.items():
        assert getattr(backdoorlab, name) is getattr(home, name), name
        assert getattr(backdoorlab, name).__doc__, name
        assert name in dir(backdoorlab)
    from backdoorlab import checkpoint_clean_budget, to_float  # from-imports go through __getattr__ too
    assert checkpoint_clean_budget is checkpoint_data.checkpoint_clean_budget and to_float is tensors.to_float
    with pytest.raises(AttributeError, match="no attribute 'not_a_name'"):
        backdoorlab.not_a_name
    probe = "import sys, backdoorlab; print('torch' in sys.modules, backdoorlab.to_float.__module__)"
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True).stdout.split()
    assert out == ["False", "backdoorlab.tensors"]  # torch is loaded by the first use, not by the import


def test_checkpoint_clean_budget_draws_from_the_pool_the_checkpoint_records(digits):
    from backdoorlab.budget import clean_budget, default_holdout, holdout_split

    recorded = {"holdout": {"size": 200, "split_seed": 0}}
    assert default_holdout("digits") != 200  # else the two pools below would be one
    budget = backdoorlab.checkpoint_clean_budget(digits, recorded, 50, seed=3)
    assert torch.equal(budget.indices, clean_budget(digits, 50, seed=3, holdout=200).indices)
    _, pool = holdout_split(len(digits.train_y), 200)
    assert set(budget.indices.tolist()) <= set(pool.tolist())
    assert torch.equal(budget.x, digits.train_x[budget.indices])
    assert torch.equal(budget.y, digits.train_y[budget.indices])
    # a sidecar without a pool: the data set's default pool, as every command draws it
    unrecorded = backdoorlab.checkpoint_clean_budget(digits, {}, 50, seed=3)
    assert torch.equal(unrecorded.indices, clean_budget(digits, 50, seed=3).indices)
    assert not torch.equal(unrecorded.indices, budget.indices)


def test_checkpoint_clean_budget_defaults_and_errors(digits):
    # the command line's default --clean-budget, 1,000 images, from a pool that holds them
    assert len(backdoorlab.checkpoint_clean_budget(digits, {"holdout": {"size": 1000}})) == 1000
    with pytest.raises(BackdoorlabError, match="1000 images is larger than the held-out pool of 400"):
        backdoorlab.checkpoint_clean_budget(digits, {})  # the digits' default pool holds 400
    with pytest.raises(BackdoorlabError, match="'holdout.size' must be a non-negative integer, got 'many'"):
        backdoorlab.checkpoint_clean_budget(digits, {"holdout": {"size": "many"}}, 10)


def test_triggered_test_set_stamps_the_images_the_backdoor_applies_to(digits):
    from backdoorlab.attacks import make_poisoning_attack

    one = make_poisoning_attack("badnets", target=3).backdoor
    x, y = backdoorlab.triggered_test_set(digits, one)
    keep = digits.test_y != 3
    assert len(x) == int(keep.sum()) and bool((y == 3).all()) and x.dtype == torch.float32
    assert torch.equal(x, one.trigger.apply(backdoorlab.to_float(digits.test_x[keep])).clamp(0, 1))
    assert not torch.equal(x, backdoorlab.to_float(digits.test_x[keep]))  # the trigger is there
    every = make_poisoning_attack("badnets", mode="all-to-all").backdoor
    x, y = backdoorlab.triggered_test_set(digits, every)
    assert len(x) == len(digits.test_y) and torch.equal(y, (digits.test_y + 1) % digits.num_classes)


def test_triggered_test_set_refuses_what_has_no_trigger_in_one_line(digits):
    from backdoorlab.attacks import FaultBackdoor, TriggerlessBackdoor

    for backdoor, kind in ((FaultBackdoor([0, 1], [2, 2], len(digits.test_y)), "fault"),
                           (TriggerlessBackdoor([0, 1]), "triggerless")):
        with pytest.raises(BackdoorlabError, match=f"a triggered test set stamps a trigger on images; the {kind} "
                                                   "backdoor has none"):
            backdoorlab.triggered_test_set(digits, backdoor)
    with pytest.raises(BackdoorlabError, match="needs a backdoor, got None"):
        backdoorlab.triggered_test_set(digits, backdoorlab.backdoor_of({"provenance": {"attack": None}}))


def test_qra_measures_on_the_same_triggered_test_set():
    from backdoorlab import checkpoint_data
    from backdoorlab.defenses import qra

    assert qra.triggered_test_set is checkpoint_data.triggered_test_set
    assert not hasattr(qra, "triggered_test_images")  # moved, no copy left behind


def test_one_call_each_gives_a_checkpoints_budget_backdoor_and_attack_success(digits, digits_suspect):
    """A trained BadNets suspect: the backdoor its sidecar records, the budget ``scan`` and ``repair`` draw, and a
    triggered test set on which the model's hit rate is the ASR that ``evaluate`` reports."""
    from backdoorlab.budget import clean_budget
    from backdoorlab.metrics import accuracy, evaluate, predict
    from backdoorlab.models.sidecar import holdout_size

    model, meta, directory = digits_suspect
    loaded, loaded_meta = backdoorlab.load_checkpoint(str(directory))
    backdoor = backdoorlab.backdoor_of(loaded_meta)
    assert backdoor.to_dict() == backdoorlab.backdoor_of(meta).to_dict() and backdoor.target == 0
    budget = backdoorlab.checkpoint_clean_budget(digits, loaded_meta, 300)
    expected = clean_budget(digits, 300, seed=0, holdout=holdout_size(meta, digits.name))
    assert torch.equal(budget.indices, expected.indices)
    x, y = backdoorlab.triggered_test_set(digits, backdoor)
    asr = evaluate(model, digits.test_x, digits.test_y, backdoor, digits.num_classes)["attack_success_rate"]
    assert accuracy(predict(model, x), y) == asr and asr > 0.5
