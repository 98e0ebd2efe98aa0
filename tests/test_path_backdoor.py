"""The path backdoor (`backdoorlab attack path-backdoor`): the adaptive attack on the mode-connectivity sanitizer."""

import json

import pytest
import torch

from backdoorlab.attacks import MODEL_ATTACKS, Backdoor, backdoor_of
from backdoorlab.attacks.path_backdoor import (CurvePointWeights, PathBackdoorConfig, PoisonHook, path_backdoor)
from backdoorlab.budget import holdout_split, training_part
from backdoorlab.cli import main
from backdoorlab.errors import BackdoorlabError
from backdoorlab.models import load_checkpoint
from backdoorlab.triggers import PatchTrigger

QUICK = ["--steps", "150", "--attacker-images", "400", "--no-progress"]


def test_poison_hook_stamps_a_fraction_of_non_target_images():
    bd = Backdoor(PatchTrigger(2), "all-to-one", 0)
    images = torch.zeros(40, 1, 8, 8)
    labels = torch.arange(40) % 4  # ten of them already the target
    out_x, out_y = PoisonHook(bd, 4, 0.25, seed=0)(images, labels)
    stamped = (out_x != images).flatten(1).any(1)
    assert int(stamped.sum()) == 10  # a quarter of the batch
    assert (labels[stamped] != 0).all() and (out_y[stamped] == 0).all()  # never a target image; relabelled
    assert torch.equal(out_y[~stamped], labels[~stamped]) and torch.equal(out_x[~stamped], images[~stamped])
    assert (out_x[stamped][:, :, -3:-1, -3:-1] == 1).all()  # the 2x2 patch, one pixel from the corner
    assert torch.equal(images, torch.zeros(40, 1, 8, 8))  # the batch given is not changed in place


def test_curve_point_weights_reach_only_the_model():
    model = torch.nn.Linear(3, 2)
    control = {k: torch.full_like(v, 2.0, requires_grad=True) for k, v in model.named_parameters()}
    end = {k: torch.full_like(v, -1.0) for k, v in model.named_parameters()}
    weights = CurvePointWeights(control, end, low=0.2, seed=0)
    own = curve = 0
    for _ in range(40):
        w = weights(model)
        if w["weight"] is model.weight:
            own += 1
            continue
        curve += 1
        # a point of the Bezier curve at some t in [0.2, 0.8]: solve for t from the bias, check the weight
        p, q = model.bias.detach(), w["bias"].detach()
        ts = torch.linspace(0.2, 0.8, 601)
        err = [float(((1 - t) ** 2 * p + 2 * t * (1 - t) * 2.0 + t ** 2 * -1.0 - q).abs().max()) for t in ts]
        assert min(err) < 1e-2
        grad, = torch.autograd.grad(w["weight"].sum(), model.weight)
        t = float(ts[int(torch.tensor(err).argmin())])
        assert torch.allclose(grad, torch.full_like(grad, (1 - t) ** 2), atol=1e-2)  # the model's (1 - t)^2 share
        assert not w["weight"].grad_fn.next_functions or control["weight"].grad is None
    assert own > 5 and curve > 5  # both kinds of batches
    # the control point and the end are detached copies: no gradient can reach the tensors given
    assert all(not v.requires_grad for v in weights.control.values())


def test_path_keeps_the_backdoor_on_the_attackers_data(digits, digits_suspect):
    model, meta, _ = digits_suspect
    bd = backdoor_of(meta)
    x, y = training_part(digits)
    cfg = PathBackdoorConfig(curve_steps=200, harden_rounds=1, harden_curve_steps=100, harden_steps=60,
                             augment="none")
    released, report = path_backdoor(model, bd, x[:500], y[:500], 10, cfg, progress=False)
    path = report["attacker_path"]
    assert [r["t"] for r in path] == [0.0, 0.25, 0.5, 0.75, 1.0]
    assert all(r["attack_success_rate"] > 0.9 and r["clean_accuracy"] > 0.8 for r in path), path
    # the released model is a point inside the path, far from the suspect, and keeps the backdoor on test images
    assert report["relative_distance"] > 0.2
    m = bd.measure(released, digits.test_x, digits.test_y, 10)
    assert m["attack_success_rate"] > 0.8
    assert (released(digits.test_x.float() / 255).argmax(1) == digits.test_y).float().mean() > 0.8
    r = report["rounds"][0]  # the hardening raised the backdoor at the middle of its simulated clean curve
    assert r["simulated_t05_after"]["attack_success_rate"] > r["simulated_t05_before"]["attack_success_rate"]


def test_the_attacker_never_touches_the_defenders_pool(digits, digits_suspect, tmp_path, monkeypatch):
    import backdoorlab.attacks.path_backdoor as module
    from backdoorlab.runs import model_attack_run
    _, meta, suspect_dir = digits_suspect
    seen = {}

    def spy(model, backdoor, x, y, num_classes, cfg, progress=True):
        seen["x"] = x
        return model, {"relative_weight_change": {}}

    monkeypatch.setattr(module, "path_backdoor", spy)
    model_attack_run(digits, "path-backdoor", str(suspect_dir), str(tmp_path / "o"), backdoor=backdoor_of(meta),
                     settings=PathBackdoorConfig(), attacker_images=500, progress=False)
    _, pool = holdout_split(len(digits.train_y), meta["holdout"]["size"])
    pool_rows = {bytes(r) for r in digits.train_x[pool].flatten(1).numpy()}
    train_rows = {bytes(r) for r in training_part(digits)[0].flatten(1).numpy()}
    rows = [bytes(r) for r in seen["x"].flatten(1).numpy()]
    assert len(rows) == 500 and all(r in train_rows for r in rows)
    assert not any(r in pool_rows - train_rows for r in rows)  # no pool image (only exact duplicates are shared)


def test_cli_sidecar_round_trip(digits_suspect, tmp_path, capsys):
    _, _, suspect_dir = digits_suspect
    out = tmp_path / "adaptive"
    assert main(["attack", "path-backdoor", str(suspect_dir), "--out", str(out), *QUICK, "--json"]) == 0
    summary = json.loads(capsys.readouterr().out)
    model, meta = load_checkpoint(str(out))
    attack = meta["provenance"]["attack"]
    assert attack["name"] == "path-backdoor" and attack["trigger"]["kind"] == "patch" and attack["target"] == 0
    assert meta["provenance"]["report"]["attacker_path"][2]["t"] == 0.5
    config = json.loads((out / "config.json").read_text())
    assert config["settings"]["curve_steps"] == 150 and config["attacker_images"] == 400
    assert main(["evaluate", str(out), "--json"]) == 0  # the backdoor is measured from the sidecar alone
    evaluated = json.loads(capsys.readouterr().out)
    assert evaluated["attack_success_rate"] == pytest.approx(summary["after"]["attack_success_rate"])
    assert evaluated["attack_success_rate"] > 0.8
    assert main(["attack", "path-backdoor", str(suspect_dir), "--out", str(tmp_path / "again"), *QUICK]) == 0
    assert "backdoor: the one the suspect's sidecar records" in capsys.readouterr().out


@pytest.mark.parametrize("args, target", [([], 4), (["--target", "0"], 0), (["--trigger-size", "2"], 0)])
def test_without_trigger_options_the_recorded_backdoor_is_the_one_kept(digits_suspect, tmp_path, capsys, monkeypatch,
                                                                        args, target):
    # the suspect's sidecar says target 4: path-backdoor keeps that backdoor unless the command line describes one
    import shutil
    import backdoorlab.attacks.path_backdoor as module
    _, _, suspect_dir = digits_suspect
    copy = tmp_path / "suspect"
    shutil.copytree(suspect_dir, copy)
    meta = json.loads((copy / "model.json").read_text())
    meta["provenance"]["attack"]["target"] = 4
    (copy / "model.json").write_text(json.dumps(meta))
    seen = {}

    def spy(model, backdoor, x, y, num_classes, cfg, progress=True):
        seen["backdoor"] = backdoor
        return model, {"relative_weight_change": {}}

    monkeypatch.setattr(module, "path_backdoor", spy)
    assert main(["attack", "path-backdoor", str(copy), "--out", str(tmp_path / "o"), *QUICK, "--json", *args]) == 0, \
        capsys.readouterr().err
    assert seen["backdoor"].to_dict()["target"] == target
    size = seen["backdoor"].to_dict()["trigger"]["size"]
    assert size == (2 if "--trigger-size" in args else meta["provenance"]["attack"]["trigger"]["size"])


@pytest.mark.parametrize("args, augment", [([], "affine"), (["-o", "augment=none"], "none")])
def test_the_augmentation_defaults_to_the_sanitizers_for_the_data_set(digits_suspect, tmp_path, capsys, monkeypatch,
                                                                      args, augment):
    # the attacker's curve imitates the defender's: by default the augmentation the sanitizer uses on the data set
    import backdoorlab.attacks.path_backdoor as module
    _, _, suspect_dir = digits_suspect
    seen = {}

    def spy(model, backdoor, x, y, num_classes, cfg, progress=True):
        seen["cfg"] = cfg
        return model, {"relative_weight_change": {}, "config": {"augment": cfg.augment}}

    monkeypatch.setattr(module, "path_backdoor", spy)
    out = tmp_path / "o"
    assert main(["attack", "path-backdoor", str(suspect_dir), "--out", str(out), *QUICK, "--json", *args]) == 0
    assert seen["cfg"].augment == augment
    assert json.loads((out / "config.json").read_text())["settings"]["augment"] == augment


def test_an_unresolved_auto_augmentation_is_refused(digits, digits_suspect):
    model, meta, _ = digits_suspect
    x, y = training_part(digits)
    with pytest.raises(BackdoorlabError, match="resolve it first"):
        path_backdoor(model, backdoor_of(meta), x[:100], y[:100], 10, PathBackdoorConfig(), progress=False)
    from backdoorlab.attacks import ModelAttackData
    data = ModelAttackData(x[:100], y[:100], x[:10], y[:10], 10, backdoor=backdoor_of(meta))  # no data set named
    with pytest.raises(BackdoorlabError, match="resolve it first"):
        MODEL_ATTACKS.entry("path-backdoor").run(model, PathBackdoorConfig(), data)
    assert PathBackdoorConfig().resolve_augment("cifar10").augment == "crop-flip-jpeg"
    assert PathBackdoorConfig(augment="jpeg").resolve_augment("cifar10").augment == "jpeg"


@pytest.mark.parametrize("args, msg", [
    (["-o", "release_t=1.5"], "release_t must be in (0, 1), got 1.5"),
    (["-o", "harden_rounds=x"], "option harden_rounds='x' for path-backdoor: expected a value like 0"),
    (["-o", "bogus=1"], "unknown option 'bogus' for path-backdoor"),
    (["-o", "augment=sideways"], "unknown augmentation 'sideways' for path-backdoor"),
    (["--steps", "0"], "curve_steps must be >= 1"),
    (["--attacker-images", "5"], "path-backdoor needs at least 20 attacker images, got 5"),
    (["--trigger", "dynamic", "--target", "0,1", "--trigger-size", "2"], "path-backdoor needs a backdoor with one trigger"),
])
def test_cli_errors_are_one_line(digits_suspect, tmp_path, capsys, args, msg):
    _, _, suspect_dir = digits_suspect
    code = main(["attack", "path-backdoor", str(suspect_dir), "--out", str(tmp_path / "o"), *args, "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and msg in err and len(err.strip().splitlines()) == 1, err
    assert not (tmp_path / "o").exists()  # nothing written


def test_config_refuses_bad_values():
    with pytest.raises(BackdoorlabError, match="poison_fraction must be in"):
        PathBackdoorConfig(poison_fraction=0)
    with pytest.raises(BackdoorlabError, match="min_distance must be in"):
        PathBackdoorConfig(min_distance=0.7)
