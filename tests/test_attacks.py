"""Blended, dynamic, triggerless, weight-perturbation and fault-injection attacks (issue: the attacks users need)."""

import json

import numpy as np
import pytest
import torch
from torch import nn

from backdoorlab.attacks import (Backdoor, FaultBackdoor, FaultInjectionConfig, MultiBackdoor, TriggerlessAttack,
                                 TriggerlessBackdoor, WeightPerturbationConfig, adversarial_weight_perturbation,
                                 backdoor_from_dict, fault_injection, make_poisoning_attack, single_bias_attack)
from backdoorlab.attacks.weights import relative_change
from backdoorlab.augment import augment, random_jpeg
from backdoorlab.cli import main
from backdoorlab.data import load_dataset
from backdoorlab.errors import BackdoorlabError
from backdoorlab.models import create_model
from backdoorlab.runs import train_defaults, train_run
from backdoorlab.train import TrainConfig
from backdoorlab.triggers import (BlendTrigger, PatchTrigger, RandomPatchTrigger, border_locations, deal_locations,
                                 trigger_from_dict)


class Fixed(nn.Module):
    """A 'model' that predicts a label from the mean of the bottom-right 2x2 pixels: bright -> 0, else 1."""

    def forward(self, x):
        bright = x[:, :, -2:, -2:].mean(dim=(1, 2, 3)) > 0.9
        return torch.stack([bright.float(), (~bright).float()], 1) * 10


# ------------------------------------------------------------------------------------------------ triggers


def test_blend_trigger_formula_and_separate_test_alpha():
    x = torch.rand(4, 3, 8, 8)
    t = BlendTrigger(alpha=0.2, test_alpha=0.5, seed=3)
    k = t.key(x.shape)
    assert k.shape == (1, 3, 8, 8) and 0 <= k.min() and k.max() <= 1
    assert torch.allclose(t.apply(x, training=True), 0.8 * x + 0.2 * k)
    assert torch.allclose(t.apply(x), 0.5 * x + 0.5 * k)
    assert torch.equal(BlendTrigger(seed=3).key(x.shape), k)  # the seed fixes the key
    assert not torch.equal(BlendTrigger(seed=4).key(x.shape), k)


def test_blend_trigger_from_image_file(tmp_path):
    from PIL import Image
    img = np.zeros((16, 16, 3), dtype=np.uint8)
    img[:, 8:] = 255
    path = tmp_path / "key.png"
    Image.fromarray(img).save(path)
    t = BlendTrigger(pattern=str(path), alpha=1.0)
    out = t.apply(torch.zeros(2, 1, 8, 8))  # resized to 8x8 and turned grey
    assert out.shape == (2, 1, 8, 8)
    assert out[0, 0, :, :3].max() < 0.05 and out[0, 0, :, 5:].min() > 0.95
    assert trigger_from_dict(t.to_dict()).to_dict() == t.to_dict()


@pytest.mark.parametrize("kwargs, msg", [(dict(alpha=1.5), "alpha must lie in"), (dict(test_alpha=-0.1), "test alpha"),
                                         (dict(pattern="/no/such/file.png"), "not a file")])
def test_blend_trigger_bad_parameters(kwargs, msg):
    with pytest.raises(BackdoorlabError, match=msg):
        BlendTrigger(**kwargs)


def test_blend_trigger_corrupt_image_file(tmp_path):
    bad = tmp_path / "key.png"
    bad.write_bytes(b"not an image")
    with pytest.raises(BackdoorlabError, match="cannot read blend pattern image"):
        BlendTrigger(pattern=str(bad)).apply(torch.zeros(1, 3, 8, 8))


def test_random_patch_trigger_uses_only_allowed_locations_and_varies():
    t = RandomPatchTrigger(size=2, locations=[(0, 0), (6, 6)], seed=1)
    x = torch.zeros(64, 1, 8, 8)
    out = t.apply(x)
    changed = out != 0
    assert not changed[:, :, 2:6, :].any() and not changed[:, :, :, 2:6].any()
    at_first = changed[:, 0, :2, :2].any(dim=(1, 2))
    at_second = changed[:, 0, 6:, 6:].any(dim=(1, 2))
    assert (at_first ^ at_second).all() and at_first.any() and at_second.any()  # exactly one location per image
    assert not torch.equal(out[at_first][0], out[at_first][1])  # a fresh pattern per image
    assert torch.equal(t.apply(x), out)  # evaluation is reproducible
    assert trigger_from_dict(t.to_dict()).to_dict() == t.to_dict()


def test_random_patch_trigger_errors():
    with pytest.raises(BackdoorlabError, match="does not fit"):
        RandomPatchTrigger(size=4, locations=[(6, 6)]).apply(torch.zeros(1, 1, 8, 8))
    with pytest.raises(BackdoorlabError, match="unknown random-patch pattern"):
        RandomPatchTrigger(pattern="stripes")
    with pytest.raises(BackdoorlabError, match="does not fit"):
        PatchTrigger(size=9).apply(torch.zeros(1, 1, 8, 8))


def test_border_locations_ring():
    ring = border_locations(28, 28, 4, 1)
    assert len(ring) == len(set(ring)) == 16
    assert all(r in (1, 21) or c in (1, 21) for r, c in ring)


@pytest.mark.parametrize("shape,n", [((32, 32), 3), ((28, 28), 3), ((32, 32), 2), ((28, 28), 4)])
def test_dealt_locations_keep_each_target_under_a_horizontal_flip(shape, n):
    ring = border_locations(*shape, 4, 1)
    sets = deal_locations(ring, n)
    assert sorted(p for s in sets for p in s) == sorted(ring)  # every location, once
    assert all(sets) and max(map(len, sets)) - min(map(len, sets)) <= 2
    cols = sorted({c for _, c in ring})
    for s in sets:  # the mirror image of every location of a target is a location of the same target
        assert {(r, cols[0] + cols[-1] - c) for r, c in s} == set(s)
    # dealt one at a time (the earlier default), a flip sent most locations to another target's
    single = [ring[i::n] for i in range(n)]
    owner = {p: i for i, s in enumerate(single) for p in s}
    assert sum(owner[(r, cols[0] + cols[-1] - c)] != owner[(r, c)] for r, c in ring) >= len(ring) // 2
    with pytest.raises(BackdoorlabError, match="targets need"):
        deal_locations(ring, len(ring))


# -------------------------------------------------------------------------------------------- poisoning


def test_dynamic_multi_target_poisoning_splits_between_targets():
    x = torch.zeros(400, 1, 28, 28, dtype=torch.uint8)
    y = torch.arange(400) % 10
    atk = make_poisoning_attack("dynamic", target=[0, 1], poison_rate=0.1, image_shape=(1, 28, 28))
    p = atk.poison(x, y, 10, seed=0)
    assert len(p.poisoned) == 40
    for part, target in ((0, 0), (1, 1)):
        idx = torch.nonzero(p.part == part).flatten()
        assert len(idx) == 20 and (p.y[idx] == target).all() and (y[idx] != target).all()
        assert (p.x[idx].flatten(1).max(1).values > 0).all()  # a pattern was pasted
    locations = [set(map(tuple, b.trigger.locations)) for b in atk.backdoor.parts]
    assert not locations[0] & locations[1]  # each target has its own location set
    clean = torch.ones(len(y), dtype=torch.bool)
    clean[p.poisoned] = False
    assert torch.equal(p.x[clean], x[clean]) and torch.equal(p.y[clean], y[clean])


@pytest.mark.parametrize("name", ["badnets", "blended", "dynamic"])
def test_all_to_all_for_every_trigger(name):
    atk = make_poisoning_attack(name, mode="all-to-all", poison_rate=0.5)
    x = torch.zeros(100, 1, 8, 8, dtype=torch.uint8)
    y = torch.arange(100) % 10
    p = atk.poison(x, y, 10, seed=0)
    assert torch.equal(p.y[p.poisoned], (y[p.poisoned] + 1) % 10)
    rebuilt = backdoor_from_dict(json.loads(json.dumps(atk.to_dict())))
    assert rebuilt.mode == "all-to-all" and rebuilt.trigger.to_dict() == atk.backdoor.trigger.to_dict()


def test_multi_backdoor_measures_each_target():
    parts = [Backdoor(PatchTrigger(2, "bottom-right", 1.0, margin=0), "all-to-one", 0),
             Backdoor(PatchTrigger(2, "top-left", 1.0, margin=0), "all-to-one", 1)]
    mb = MultiBackdoor(parts)
    x, y = torch.zeros(10, 1, 8, 8), torch.tensor([0, 1] * 5)
    m = mb.measure(Fixed(), x, y, 2)
    assert m["attack_success_rate_per_target"] == {"0": 1.0, "1": 1.0}  # without bright corner the model says 1
    assert m["attack_success_rate"] == 1.0
    assert backdoor_from_dict(mb.to_dict()).to_dict() == mb.to_dict()
    with pytest.raises(BackdoorlabError, match="distinct"):
        MultiBackdoor([parts[0], parts[0]])


def test_stamp_after_augmentation_keeps_data_clean_and_stamps_batches():
    atk = make_poisoning_attack("badnets", poison_rate=0.5, stamp="augmented")
    x = torch.zeros(20, 1, 8, 8, dtype=torch.uint8)
    y = torch.arange(20) % 10
    p = atk.poison(x, y, 10, seed=0)
    assert torch.equal(p.x, x) and (p.y[p.poisoned] == 0).all()
    hook = atk.batch_hook(p)
    idx = torch.arange(20)
    images, labels = hook(torch.zeros(20, 1, 8, 8), p.y, idx)
    stamped = images.flatten(1).max(1).values > 0
    assert torch.equal(torch.nonzero(stamped).flatten(), p.poisoned) and torch.equal(labels, p.y)
    with pytest.raises(BackdoorlabError, match="unknown trigger stamping"):
        make_poisoning_attack("badnets", stamp="later")


def test_several_targets_need_dynamic():
    with pytest.raises(BackdoorlabError, match="dynamic"):
        make_poisoning_attack("badnets", target=[0, 1])


# --------------------------------------------------------------------------------------------- augment


def test_random_jpeg_is_seeded_and_changes_some_images():
    x = torch.rand(8, 3, 32, 32)
    a = random_jpeg(x, torch.Generator().manual_seed(0), p=0.5)
    b = random_jpeg(x, torch.Generator().manual_seed(0), p=0.5)
    assert torch.equal(a, b)
    changed = (a - x).abs().flatten(1).max(1).values > 0.02
    assert 0 < changed.sum() < 8
    assert torch.equal(random_jpeg(x, torch.Generator(), p=0.0), x)
    grey = augment(torch.rand(4, 1, 28, 28), "crop-flip-jpeg", torch.Generator().manual_seed(1))
    assert grey.shape == (4, 1, 28, 28) and 0 <= grey.min() and grey.max() <= 1


# ------------------------------------------------------------------------------------------ triggerless


def test_feature_dropout_forced_units_and_inference_switch():
    m = create_model("small-cnn", num_classes=10, in_channels=1, input_size=8, dropout=0.5)
    m.eval()
    x = torch.rand(4, 1, 8, 8)
    assert torch.equal(m(x), m(x))  # plain dropout is off in eval mode
    m2 = create_model("small-cnn", num_classes=10, in_channels=1, input_size=8, dropout=0.5, dropout_at_inference=True)
    m2.eval()
    torch.manual_seed(0)
    assert not torch.equal(m2(x), m2(x))  # kept active at inference
    feats = torch.ones(3, 6)
    m2.dropout.forced = torch.tensor([1, 4])
    out = m2.dropout(feats)
    assert (out[:, [1, 4]] == 0).all()
    with pytest.raises(BackdoorlabError, match="dropout rate"):
        create_model("small-cnn", num_classes=10, in_channels=1, input_size=8, dropout=1.5)


def test_triggerless_needs_dropout_and_valid_neurons():
    plain = create_model("small-cnn", num_classes=10, in_channels=1, input_size=8)
    with pytest.raises(BackdoorlabError, match="needs a model with dropout"):
        TriggerlessBackdoor([0, 1], 0).measure(plain, torch.rand(4, 1, 8, 8), torch.arange(4), 10)
    with_drop = create_model("small-cnn", num_classes=10, in_channels=1, input_size=8, dropout=0.5,
                             dropout_at_inference=True)
    with pytest.raises(BackdoorlabError, match="does not exist"):
        TriggerlessBackdoor([500], 0).check_model(with_drop)
    with pytest.raises(BackdoorlabError, match="dropout rate"):
        TriggerlessAttack(dropout=0.0)


def test_triggerless_hook_relabels_backdoor_batches():
    m = create_model("small-cnn", num_classes=10, in_channels=1, input_size=8, dropout=0.5, dropout_at_inference=True)
    atk = TriggerlessAttack(target=3, n_neurons=2, backdoor_fraction=0.5, seed=0)
    p = atk.poison(torch.zeros(10, 1, 8, 8, dtype=torch.uint8), torch.arange(10), 10)
    hook = atk.batch_hook(p, m)
    kinds = set()
    for _ in range(40):
        _, labels = hook(torch.zeros(10, 1, 8, 8), torch.arange(10), torch.arange(10))
        if m.dropout.forced is not None:
            assert (labels == 3).all() and m.dropout.forced.tolist() == atk.backdoor.neurons
            kinds.add("backdoor")
        else:
            assert torch.equal(labels, torch.arange(10))
            kinds.add("clean")
    assert kinds == {"backdoor", "clean"}
    hook.finish()
    assert m.dropout.forced is None
    assert backdoor_from_dict(atk.to_dict()).neurons == atk.backdoor.neurons


@pytest.fixture(scope="module")
def digits_model():
    ds = load_dataset("digits")
    model, _ = train_run(ds, "small-cnn", TrainConfig(seed=1, **train_defaults("digits", "small-cnn")), progress=False)
    return ds, model


def test_triggerless_training_plants_a_dropout_backdoor():
    ds = load_dataset("digits")
    atk = TriggerlessAttack(target=0, dropout=0.3, n_neurons=3, backdoor_fraction=0.2)
    model, meta = train_run(ds, "small-cnn", TrainConfig(seed=1, **train_defaults("digits", "small-cnn")), atk,
                            progress=False)
    m = meta["metrics"]
    assert meta["arch_args"]["dropout_at_inference"] is True
    assert m["attack_success_rate"] > 0.5  # dropping the target neurons sends clean inputs to the target
    assert m["fire_probability"] == pytest.approx(0.3 ** 3)
    assert m["expected_queries"] == pytest.approx(1 / (0.3 ** 3 * m["attack_success_rate"]))


# ---------------------------------------------------------------------------------------- model attacks


def test_weight_perturbation_stays_in_the_ball_and_plants_the_backdoor(digits_model):
    ds, model = digits_model
    bd = Backdoor(PatchTrigger(2), "all-to-one", 0)
    x, y = ds.train_x[:600], ds.train_y[:600]
    cfg = WeightPerturbationConfig(epsilon=0.02, steps=150, seed=0)
    attacked, report = adversarial_weight_perturbation(model, bd, x, y, 10, cfg, progress=False)
    assert report["relative_weight_change"]["max_abs_change"] <= 0.02 + 1e-6
    for (n, p0), p1 in zip(model.named_parameters(), attacked.parameters()):
        assert (p1 - p0).abs().max() <= 0.02 + 1e-6, n
    before = bd.measure(model, ds.test_x, ds.test_y, 10)["attack_success_rate"]
    after = bd.measure(attacked, ds.test_x, ds.test_y, 10)["attack_success_rate"]
    assert after > max(0.5, before + 0.3)
    with pytest.raises(BackdoorlabError, match="epsilon must be > 0"):
        WeightPerturbationConfig(epsilon=0)



def test_weight_perturbation_plants_every_target_of_a_multi_target_backdoor(digits_model):
    ds, model = digits_model
    bd = MultiBackdoor([Backdoor(PatchTrigger(2, "bottom-right"), "all-to-one", 0),
                        Backdoor(PatchTrigger(2, "top-left"), "all-to-one", 1)])
    cfg = WeightPerturbationConfig(epsilon=0.02, steps=150, seed=0)
    attacked, _ = adversarial_weight_perturbation(model, bd, ds.train_x[:600], ds.train_y[:600], 10, cfg,
                                                  progress=False)
    before = bd.measure(model, ds.test_x, ds.test_y, 10)["attack_success_rate_per_target"]
    after = bd.measure(attacked, ds.test_x, ds.test_y, 10)["attack_success_rate_per_target"]
    for target in ("0", "1"):
        assert after[target] > max(0.5, before[target] + 0.3), (target, before, after)
    with pytest.raises(BackdoorlabError, match="weight-perturbation attack stamps a trigger"):
        adversarial_weight_perturbation(model, TriggerlessBackdoor([0, 1], 0), ds.train_x[:10], ds.train_y[:10],
                                        10, cfg, progress=False)

def test_relative_change_statistics():
    before = {"w": torch.tensor([1.0, 2.0, 0.0, -4.0])}
    after = {"w": torch.tensor([1.1, 2.0, 0.5, -4.0])}
    r = relative_change(before, after)
    assert r["mean"] == pytest.approx(0.1 / 3) and r["max_abs_change"] == pytest.approx(0.5)
    assert r["changed_fraction"] == pytest.approx(0.5)


def test_fault_injection_flips_chosen_images_and_reports(digits_model):
    ds, model = digits_model
    pred = model(ds.test_x[:50].float() / 255).argmax(1)
    idx = torch.nonzero(pred == ds.test_y[:50]).flatten()[:3]
    targets = ((ds.test_y[idx] + 1) % 10).tolist()
    cfg = FaultInjectionConfig(layer="fc", steps=2000, lr=1e-3)
    attacked, report = fault_injection(model, ds.test_x[idx], targets, ds.train_x[:500], cfg, progress=False)
    assert report["success"]
    fb = FaultBackdoor(idx.tolist(), targets, len(ds.test_y))
    m = fb.measure(attacked, ds.test_x, ds.test_y, 10)
    assert m["attack_success_rate"] == 1.0 and m["accuracy_on_rest"] > 0.8
    changed = [n for (n, a), b in zip(model.named_parameters(), attacked.parameters()) if not torch.equal(a, b)]
    assert changed and all(n.startswith("fc.") for n in changed)  # only the chosen layer moved
    with pytest.raises(BackdoorlabError, match="valid: .*'fc'"):
        fault_injection(model, ds.test_x[idx], targets, ds.train_x[:10], FaultInjectionConfig(layer="nope"),
                        progress=False)


def test_single_bias_attack_changes_one_value(digits_model):
    ds, model = digits_model
    x = ds.test_x[:1]
    target = int((ds.test_y[0] + 3) % 10)
    attacked, report = single_bias_attack(model, x, target, "fc")
    assert attacked(x.float() / 255).argmax(1).item() == target
    diff = sum(int((a != b).sum()) for a, b in zip(model.parameters(), attacked.parameters()))
    assert diff == 1 and report["success"]


# -------------------------------------------------------------------------------------------------- CLI


def test_cli_blended_dynamic_and_model_attacks(tmp_path, capsys):
    common = ["--dataset", "digits", "--arch", "small-cnn", "--epochs", "15", "--no-progress"]
    assert main(["train", *common, "--attack", "blended", "--alpha", "0.3", "--out", str(tmp_path / "b")]) == 0
    meta = json.loads((tmp_path / "b" / "model.json").read_text())
    assert meta["provenance"]["attack"]["trigger"]["kind"] == "blend"
    assert main(["train", *common, "--attack", "dynamic", "--target", "0,1", "--trigger-size", "2",
                 "--out", str(tmp_path / "d")]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "d"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert set(out["attack_success_rate_per_target"]) == {"0", "1"}

    assert main(["train", *common, "--out", str(tmp_path / "clean")]) == 0
    assert main(["attack", "weight-perturbation", str(tmp_path / "clean"), "--out", str(tmp_path / "awp"),
                 "--epsilon", "0.02", "--steps", "100", "--trigger-size", "2", "--no-progress"]) == 0
    capsys.readouterr()
    assert main(["evaluate", str(tmp_path / "awp"), "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["backdoor"]["trigger"]["size"] == 2 and out["attack_success_rate"] is not None
    assert (tmp_path / "awp" / "config.json").exists()
    assert main(["attack", "single-bias", str(tmp_path / "clean"), "--out", str(tmp_path / "sba"), "--images", "1",
                 "--json", "--no-progress"]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["after"]["attack_success_rate"] == 1.0 and out["success"]


@pytest.mark.parametrize("args, msg", [
    (["train", "--attack", "blended", "--alpha", "1.5"], "alpha must lie in"),
    (["train", "--attack", "badnets", "--trigger-size", "9"], "does not fit"),
    (["train", "--attack", "badnets", "--alpha", "0.2"], "does not apply to the badnets attack"),
    (["train", "--attack", "nope"], "valid: 'badnets', 'blended', 'dynamic', 'latent', 'triggerless'"),
    (["train", "--attack", "triggerless", "--dropout", "0"], "dropout rate must lie in"),
    (["train", "--attack", "badnets", "--target-neurons", "3"], "--target-neurons is for --attack triggerless"),
])
def test_cli_attack_parameter_errors(tmp_path, capsys, args, msg):
    code = main([*args[:1], "--dataset", "digits", "--arch", "small-cnn", *args[1:], "--out", str(tmp_path / "x")])
    err = capsys.readouterr().err
    assert code == 2 and msg in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x").exists()


def test_cli_model_attack_errors(tmp_path, capsys):
    d = tmp_path / "m"
    assert main(["train", "--dataset", "digits", "--arch", "small-cnn", "--epochs", "1", "--out", str(d),
                 "--no-progress"]) == 0
    capsys.readouterr()
    for args, msg in [(["weight-perturbation", "--epsilon", "0"], "epsilon must be > 0"),
                      (["fault-injection", "--layer", "nope"], "no layer with parameters named 'nope'"),
                      (["nope"], "unknown model attack"),
                      (["fault-injection", "--alpha", "0.3"], "trigger options do not apply")]:
        code = main(["attack", args[0], str(d), "--out", str(tmp_path / "o"), *args[1:], "--no-progress"])
        err = capsys.readouterr().err
        assert code == 2 and msg in err and len(err.strip().splitlines()) == 1, (args, err)
