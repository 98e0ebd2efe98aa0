"""Repairers compared against the sanitizer: fine-tuning, FST, fine-pruning, ANP, I-BAU, Gaussian weight noise; `repair`
CLI."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from backdoorlab.budget import clean_budget
from backdoorlab.cli import main
from backdoorlab.data import load_dataset
from backdoorlab.defenses.fst import FSTConfig, feature_shift_tuning
from backdoorlab.defenses.anp import ANPConfig, anp, learn_masks, neuron_layers, prune_neurons
from backdoorlab.defenses.noise import NoiseConfig, add_weight_noise, gaussian_noise
from backdoorlab.defenses.pruning import (ChannelMask, FinePruningConfig, _next_linear, fine_prune,
                                          last_feature_layer, mean_channel_activation)
from backdoorlab.defenses.repair import REPAIRERS, repair, repairer_config
from backdoorlab.errors import BackdoorlabError
from backdoorlab.metrics import accuracy, predict
from backdoorlab.models import create_model
from backdoorlab.tensors import to_float
from conftest import train_badnets_suspect


@pytest.fixture(scope="module")
def suspect(digits, tmp_path_factory):
    out = tmp_path_factory.mktemp("defenses") / "badnets"
    model, meta = train_badnets_suspect(digits, out)
    return model, meta, out


@pytest.fixture(scope="module")
def budget(digits):
    return clean_budget(digits, 300, seed=0)


@pytest.mark.parametrize("arch, shape", [("small-cnn", (1, 12, 12)), ("resnet20", (3, 8, 8)),
                                         ("preact-resnet18", (3, 8, 8)), ("vgg16-bn", (3, 8, 8))])
def test_fine_pruning_mask_folds_exactly(arch, shape):
    torch.manual_seed(0)
    model = create_model(arch, num_classes=4, in_channels=shape[0], input_size=list(shape[1:])).eval()
    x = torch.rand(6, *shape)
    name, layer, channels = last_feature_layer(model, x)
    mask = ChannelMask(layer, channels)
    mask.mask[torch.randperm(channels)[: channels // 2]] = 0
    with torch.no_grad():
        masked = model(x)
    mask.remove()
    with torch.no_grad():
        unmasked = model(x)
        from backdoorlab.defenses.pruning import fold_channel_mask
        fold_channel_mask(_next_linear(model, name)[0], mask.mask, channels)
        folded = model(x)
    scale = (masked - unmasked).abs().max()
    assert scale > 0  # the mask matters
    assert (folded - masked).abs().max() <= 1e-3 * scale + 1e-7


def test_fine_pruning_prunes_dormant_channels_within_tolerance(suspect, budget):
    model, _, _ = suspect
    cfg = FinePruningConfig(max_accuracy_drop=0.05, finetune_steps=0)
    pruned, info = fine_prune(model, budget, cfg, progress=False)
    assert info["layer"] == "body.2" and info["channels"] == 64 and info["pruned"] > 0
    _, layer, _ = last_feature_layer(model, budget.x)
    fit_x = budget.x[: len(budget) - 30]
    order = torch.argsort(mean_channel_activation(model, layer, fit_x))
    assert info["pruned_channels"] == order[: info["pruned"]].tolist()  # lowest mean activation first
    assert not dict(pruned.named_modules())["body.2"]._forward_hooks  # a plain model, no hook left
    cols = pruned.body[5].weight.view(128, 64, -1)[:, info["pruned_channels"]]
    assert cols.abs().max() == 0
    val = budget.split(30)[1]
    assert accuracy(predict(pruned, val.x), val.y) >= info["validation_accuracy"]["before"] - 0.05 - 1e-6
    assert model.body[5].weight.abs().sum() > 0 and pruned is not model  # the suspect is untouched


def test_fine_pruning_fine_tune_keeps_pruned_channels_dead(suspect, budget):
    model, _, _ = suspect
    pruned, info = fine_prune(model, budget, FinePruningConfig(finetune_steps=30), progress=False)
    cols = pruned.body[5].weight.view(128, 64, -1)[:, info["pruned_channels"]]
    assert info["pruned"] > 0 and cols.abs().max() == 0


def test_anp_neurons_and_pruning(suspect):
    model, _, _ = suspect
    layers = neuron_layers(model)
    assert [n for n, _ in layers] == ["body.0.1", "body.2.1", "body.5"]  # BN channels + hidden linear, not fc
    masks = [torch.ones(m.weight.shape[0]) for _, m in layers]
    masks[1][7], masks[2][3] = 0.0, 0.1
    pruned = prune_neurons(model, masks, 2)
    assert pruned.body[2][1].weight[7] == 0 and pruned.body[5].weight[3].abs().max() == 0
    assert model.body[2][1].weight[7] != 0
    changed = sum(int((a != b).any()) for a, b in zip(pruned.state_dict().values(), model.state_dict().values()))
    assert changed == 2


def test_anp_masks_react_to_perturbation(suspect, budget):
    model, _, _ = suspect
    natural = learn_masks(model, budget, ANPConfig(eps=0.0, alpha=1.0, iterations=20), progress=False)
    robust = learn_masks(model, budget, ANPConfig(iterations=20), progress=False)
    assert all(((m >= 0) & (m <= 1)).all() for m in robust)
    # without perturbation the trained model's masks barely move; adversarial perturbation drives some down
    assert torch.cat(natural).min() > torch.cat(robust).min()


def test_anp_auto_threshold_uses_validation_only(suspect, budget):
    model, _, _ = suspect
    pruned, info = anp(model, budget, ANPConfig(iterations=40, max_accuracy_drop=0.03), progress=False)
    assert info["validation_accuracy"]["pruned"] >= info["validation_accuracy"]["before"] - 0.03 - 1e-6
    _, fixed = anp(model, budget, ANPConfig(iterations=40, threshold=0.5), progress=False)
    assert fixed["threshold"] == 0.5


def test_weight_noise_scale_and_choice(suspect, budget):
    model, _, _ = suspect
    g = torch.Generator().manual_seed(0)
    noisy = add_weight_noise(model, 0.1, g)
    w, v = model.body[5].weight, noisy.body[5].weight
    assert (v - w).std().item() == pytest.approx(0.1 * w.std().item(), rel=0.05)
    chosen, info = gaussian_noise(model, budget, NoiseConfig(sigmas=(0.01, 0.1, 5.0), draws=2), progress=False)
    ok = [t["sigma"] for t in info["trials"] if t["best_validation_accuracy"] >= info["validation_accuracy"]["before"] - 0.02]
    assert info["sigma"] == max(ok) and info["sigma"] < 5.0  # 5 std of noise destroys the model


def test_fst_shifts_the_classifier_and_keeps_its_norm(suspect, budget, digits):
    model, meta, _ = suspect
    w0 = model.fc.weight.detach().clone()
    tuned, info = feature_shift_tuning(model, budget, FSTConfig(steps=60, alpha=0.2), progress=False)
    plain, plain_info = feature_shift_tuning(model, budget, FSTConfig(steps=60, alpha=0.0, reinit=False),
                                             progress=False)
    w = tuned.fc.weight.detach()
    assert not any("parametriz" in k for k in tuned.state_dict())  # a plain checkpoint of the same layout
    assert tuned.state_dict().keys() == model.state_dict().keys()
    assert w.norm().item() == pytest.approx(w0.norm().item(), rel=1e-4)  # the norm constraint held
    cos = torch.nn.functional.cosine_similarity(w.flatten(), w0.flatten(), dim=0).item()
    assert cos == pytest.approx(info["classifier_cosine_to_suspect"], abs=1e-3)
    # the penalty pushes the new classifier away from the suspect's; plain fine-tuning stays near it
    assert cos < 0 < plain_info["classifier_cosine_to_suspect"]
    assert accuracy(predict(tuned, digits.test_x), digits.test_y) > 0.5
    assert torch.equal(model.fc.weight, w0)  # the suspect is untouched
    with pytest.raises(BackdoorlabError, match="alpha must be"):
        FSTConfig(alpha=-1)


def test_fst_needs_a_classifier_layer(budget):
    net = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(64, 10))
    with pytest.raises(BackdoorlabError, match="final linear layer as `fc`"):
        feature_shift_tuning(net, budget, FSTConfig(steps=1), progress=False)


def test_sanitizer_refine_fine_tunes_an_interior_choice_on_the_whole_budget(suspect, budget, monkeypatch):
    import copy
    import dataclasses
    from backdoorlab.defenses import ModeConnectivitySanitizer, SanitizerConfig
    from backdoorlab.defenses import mode_connectivity
    model = suspect[0]
    other = copy.deepcopy(model)
    # tolerance 1: every t qualifies, so two suspects give t = 0.5 and one suspect gives t = 1
    base = SanitizerConfig(steps=20, second_steps=20, grid=3, batch_size=64, ca_tolerance=1.0, refine_steps=0,
                           refine_guard=False, second_endpoint="scratch", verify=False)
    plain = ModeConnectivitySanitizer(base, progress=False).sanitize(model, budget, other)
    seen = []
    real = mode_connectivity.finetune

    def spy(m, x, y, cfg, **kw):
        seen.append((kw.get("desc"), len(y), cfg.steps))
        return real(m, x, y, cfg, **kw)

    monkeypatch.setattr(mode_connectivity, "finetune", spy)
    refine = dataclasses.replace(base, refine_steps=10)
    refined = ModeConnectivitySanitizer(refine, progress=False).sanitize(model, budget, other)
    assert refined.t == plain.t == 0.5 and refined.refined and not plain.refined
    assert "refine" in refined.seconds and "refine" not in plain.seconds
    assert ("refine", len(budget), 10) in seen  # fit part and validation slice together
    changed = [k for k, v in refined.model.state_dict().items() if not torch.equal(v, plain.model.state_dict()[k])]
    assert changed
    seen.clear()
    one = ModeConnectivitySanitizer(refine, progress=False).sanitize(model, budget)  # t = 1: the made endpoint
    assert one.t == 1.0 and not one.refined and "refine" not in one.seconds
    assert not [s for s in seen if s[0] == "refine"]
    with pytest.raises(BackdoorlabError, match="refine steps"):
        SanitizerConfig(refine_steps=-1)


class _Oracle(nn.Module):
    """Answers every image it was given with that image's label (a trial refine that helps, for the guard test)."""

    def __init__(self, x, y, num_classes):
        super().__init__()
        self.x, self.y, self.k = x.float().flatten(1) / 255.0, y.long(), num_classes

    def forward(self, xb):
        i = torch.cdist(xb.reshape(len(xb), -1).float(), self.x).argmin(1)
        return F.one_hot(self.y[i], self.k).float() * 10


@pytest.mark.parametrize("trial", ["hurts", "ties", "helps"])
def test_sanitizer_refine_guard_refines_only_when_a_trial_refine_lowers_validation_loss(
        suspect, budget, monkeypatch, trial):
    import copy
    import dataclasses
    from backdoorlab.defenses import ModeConnectivitySanitizer, SanitizerConfig
    model = suspect[0]
    other = copy.deepcopy(model)
    cfg = SanitizerConfig(steps=20, second_steps=20, grid=3, batch_size=64, ca_tolerance=1.0, refine_steps=10,
                          verify=False)
    plain = ModeConnectivitySanitizer(dataclasses.replace(cfg, refine_steps=0), progress=False).sanitize(
        model, budget, other)
    calls = []
    real = ModeConnectivitySanitizer.refine
    san = ModeConnectivitySanitizer(cfg, progress=False)
    fit_part, val_part = san.split_budget(budget)

    def fake_refine(self, m, part, steps=None, desc="refine"):  # noqa: ARG001
        calls.append((desc, len(part)))
        if desc.startswith("refine (guard"):
            if trial == "helps":
                return _Oracle(val_part.x, val_part.y, 10)
            out = copy.deepcopy(m)  # unchanged: the same validation accuracy, a tie
            if trial == "hurts":  # a trial that forgets everything: constant output
                with torch.no_grad():
                    for p in out.parameters():
                        p.zero_()
            return out
        return real(self, m, part, steps, desc)

    monkeypatch.setattr(ModeConnectivitySanitizer, "refine", fake_refine)
    result = san.sanitize(model, budget, other)
    assert result.t == 0.5
    assert calls[0] == ("refine (guard trial)", len(fit_part))  # the trial never sees the validation slice
    check = result.refine_check
    assert check["n_val"] == len(val_part) and check["accepted"] == (trial == "helps") == result.refined
    assert check["val_accuracy_before"] == plain.path[1]["val_accuracy"] < 1.0
    after = {"hurts": lambda a: a < check["val_accuracy_before"], "ties": lambda a: a == check["val_accuracy_before"],
             "helps": lambda a: a == 1.0}[trial]
    assert after(check["val_accuracy_after_trial"])
    assert check["val_loss_before"] == pytest.approx(plain.path[1]["val_loss"])  # the path's loss at t = 0.5
    loss = {"hurts": lambda v: v > check["val_loss_before"], "ties": lambda v: v == check["val_loss_before"],
            "helps": lambda v: v < 1e-3}[trial]
    assert loss(check["val_loss_after_trial"])
    same = all(torch.equal(v, plain.model.state_dict()[k]) for k, v in result.model.state_dict().items())
    if trial != "helps":
        assert len(calls) == 1 and same  # rejected (a tie too): the curve's model, as with refine_steps=0
    else:
        assert calls[1] == ("refine", len(budget)) and not same


def test_repair_api_validates(suspect, budget):
    model, _, _ = suspect
    with pytest.raises(BackdoorlabError, match="unknown defense 'prune'; valid:"):
        repair("prune", model, budget)
    with pytest.raises(BackdoorlabError, match="unknown option.*steps_per.*valid:"):
        repairer_config("finetune", steps_per=3)
    with pytest.raises(BackdoorlabError, match="only mode-connectivity takes two"):
        repair("finetune", model, budget, model)
    with pytest.raises(BackdoorlabError, match="too small"):
        repair("fine-pruning", model, clean_budget(load_dataset("digits"), 30))
    assert set(REPAIRERS) >= {"finetune", "fst", "fine-pruning", "anp", "nc-unlearning", "i-bau", "noise",
                              "mode-connectivity"}


def test_repair_cli_writes_model_and_report(suspect, tmp_path, capsys):
    _, meta, path = suspect
    out = tmp_path / "fp"
    code = main(["repair", "fine-pruning", str(path), "--dataset", "digits", "--clean-budget", "300", "--out", str(out),
                 "-o", "finetune_steps=20", "-o", "max-accuracy-drop=0.03", "--json", "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    r = json.loads(captured.out)
    assert r["before"][0]["clean_accuracy"] == pytest.approx(meta["metrics"]["clean_accuracy"])
    assert "attack_success_rate" in r["after"]
    saved = json.loads((out / "model.json").read_text())
    assert saved["provenance"]["repaired"]["defense"] == "fine-pruning"
    assert saved["provenance"]["attack"]["name"] == "badnets"  # the backdoor stays recorded for evaluate
    config = json.loads((out / "config.json").read_text())
    assert config["options"]["finetune_steps"] == 20 and config["options"]["max_accuracy_drop"] == 0.03
    assert json.loads((out / "report.json").read_text())["after"] == r["after"]


@pytest.mark.parametrize("args, match", [
    (["repair", "prune"], "unknown defense 'prune'; valid:"),
    (["repair", "anp", "-o", "iterations=many"], "expected a value like 2000"),
    (["repair", "anp", "-o", "bogus=1"], "unknown option 'bogus' for anp; valid:"),
    (["repair", "noise", "-o", "sigmas"], "is not KEY=VALUE"),
])
def test_repair_cli_one_line_errors(suspect, args, match, tmp_path, capsys):
    _, _, path = suspect
    code = main([*args, str(path), "--dataset", "digits", "--out", str(tmp_path / "x"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1
    import re
    assert re.search(match, err), err


def test_repair_cli_checks_option_values_before_loading_data(tmp_path, capsys, monkeypatch):
    """A bad option value fails at once, before the data set is looked for (here it would have to download)."""
    monkeypatch.setenv("BACKDOORLAB_DATA", str(tmp_path / "empty"))
    code = main(["repair", "nc-unlearning", str(tmp_path / "model"), "--dataset", "mnist", "-o", "rounds=0",
                 "--out", str(tmp_path / "x"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "at least 1 round" in err, err


def test_bn_reestimation_data_follows_training_augmentation(budget):
    from backdoorlab.defenses import ModeConnectivitySanitizer, SanitizerConfig
    from backdoorlab.runs import resolve_bn_augment
    assert resolve_bn_augment(SanitizerConfig(), {"training": {"augment": "crop-flip-jpeg"}}).bn_augment == \
        "crop-flip-jpeg"
    assert resolve_bn_augment(SanitizerConfig(), {}).bn_augment == "none"
    assert resolve_bn_augment(SanitizerConfig(bn_augment="crop"), {"training": {"augment": "jpeg"}}).bn_augment == "crop"
    with pytest.raises(BackdoorlabError, match="unknown batch-norm augmentation"):
        SanitizerConfig(bn_augment="mixup")
    plain = ModeConnectivitySanitizer(SanitizerConfig(bn_augment="none")).bn_data(budget)
    assert plain is budget.x
    s = ModeConnectivitySanitizer(SanitizerConfig(bn_augment="crop-flip"))
    a, b = s.bn_data(budget), s.bn_data(budget)
    assert torch.equal(a, b) and a.shape == budget.x.shape  # the same images at every t
    assert not torch.equal(a, to_float(budget.x))


def test_ibau_hypergradient_matches_the_explicit_jacobians():
    """The implicit hypergradient: direct gradient + (d map / d theta)^T sum_k ((d map / d delta)^T)^k g_delta,
    with the map delta - inner_lr * grad_delta H; checked against Jacobians formed explicitly on a tiny model."""
    from torch.func import functional_call, jacrev
    from backdoorlab.defenses.ibau import IBAUConfig, hypergradient
    torch.manual_seed(0)
    net = nn.Sequential(nn.Flatten(), nn.Linear(4, 6), nn.Tanh(), nn.Linear(6, 3)).double()
    xb, yb = torch.rand(5, 1, 2, 2, dtype=torch.double), torch.tensor([0, 1, 2, 1, 0])
    delta, rows = 0.3 * torch.randn(1, 1, 2, 2, dtype=torch.double), torch.tensor([1, 3])
    theta0 = torch.cat([p.detach().flatten() for p in net.parameters()])

    def unflat(theta):
        out, i = {}, 0
        for n, p in net.named_parameters():
            out[n] = theta[i:i + p.numel()].view_as(p)
            i += p.numel()
        return out

    cfg = IBAUConfig(K=3, inner_lr=0.4, delta_l2=0.01)
    patch = torch.zeros_like(xb)
    patch[rows] = 1.0

    def outer(d, theta):
        return F.cross_entropy(functional_call(net, unflat(theta), (xb + patch * d.view(1, 1, 2, 2),)), yb)

    def inner(d, theta):
        return (-F.cross_entropy(functional_call(net, unflat(theta), (xb + d.view(1, 1, 2, 2),)), yb)
                + cfg.delta_l2 * d.pow(2).sum())

    def mapped(d, theta):
        return d - cfg.inner_lr * jacrev(inner, argnums=0)(d, theta)

    d0 = delta.flatten()
    g_d, g_theta = jacrev(outer, argnums=(0, 1))(d0, theta0)
    j_d, j_theta = jacrev(mapped, argnums=(0, 1))(d0, theta0)
    v, term = torch.zeros_like(d0), g_d.clone()
    for _ in range(cfg.K):
        v = v + term
        term = j_d.T @ term
    expected = g_theta + j_theta.T @ v

    params = list(net.parameters())
    grads, loss = hypergradient(net, params, delta, xb, yb, rows, cfg)
    got = torch.cat([g.flatten() for g in grads])
    assert loss == pytest.approx(float(outer(d0, theta0)))
    assert torch.allclose(got, expected, atol=1e-10)
    assert not torch.allclose(got, g_theta, atol=1e-6)  # the indirect term is not negligible here
    direct, _ = hypergradient(net, params, delta, xb, yb, rows, IBAUConfig(K=0))
    assert torch.allclose(torch.cat([g.flatten() for g in direct]), g_theta, atol=1e-12)


def test_ibau_perturbation_ascends_and_unlearning_leaves_the_suspect(suspect, budget, digits):
    from backdoorlab.defenses.ibau import IBAUConfig, ibau, universal_perturbation
    model, meta, _ = suspect
    cfg = IBAUConfig(rounds=2)
    batches = [(to_float(budget.x[i:i + 100]), budget.y[i:i + 100].long()) for i in range(0, len(budget), 100)]
    delta = universal_perturbation(model.eval(), batches, cfg)
    x = to_float(budget.x)
    with torch.no_grad():
        own = model(x).argmax(1)
        moved = (model(x + delta).argmax(1) != own).float().mean().item()
    assert delta.shape == (1, *x.shape[1:]) and delta.norm() > 0
    assert moved > 0.5  # one universal perturbation changes most of the budget's predictions
    assert delta.norm() > 1.0
    balled = universal_perturbation(model, batches, IBAUConfig(max_norm=1.0))
    assert balled.norm().item() == pytest.approx(1.0, rel=1e-5)  # projected onto the ball's surface
    assert torch.nn.functional.cosine_similarity(balled.flatten(), delta.flatten(), dim=0) > 0.999
    before = {k: v.clone() for k, v in model.state_dict().items()}
    repaired, info = ibau(model, budget, cfg, progress=False)
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())  # the suspect is untouched
    assert repaired.state_dict().keys() == model.state_dict().keys()
    assert len(info["rounds"]) == 2 and info["config"]["K"] == 5
    assert any(not torch.equal(before[k], v) for k, v in repaired.state_dict().items())
    # with the same seed the run is reproducible
    again, _ = ibau(model, budget, cfg, progress=False)
    assert all(torch.equal(a, b) for a, b in zip(repaired.state_dict().values(), again.state_dict().values()))
    for bad, match in [({"portion": 0}, "portion"), ({"K": -1}, "K must"), ({"lr": 0}, "lr must"),
                       ({"max_norm": -1}, "max_norm")]:
        with pytest.raises(BackdoorlabError, match=match):
            IBAUConfig(**bad)


def test_repair_mode_connectivity_reports_the_refine_guard(suspect, budget):
    model, _, _ = suspect
    other = add_weight_noise(model, 0.05, torch.Generator().manual_seed(1))
    repaired, info = repair("mode-connectivity", model, budget, other, progress=False, steps=20, grid=3,
                            refine_steps=10, ca_tolerance=1.0, verify=False)
    assert info["t"] == 0.5  # tolerance 1.0: every t qualifies, and the middle is farthest from both suspects
    check = info["refine_check"]
    assert set(check) >= {"val_accuracy_before", "val_accuracy_after_trial", "val_loss_before",
                          "val_loss_after_trial", "accepted", "n_val"}
    assert check["accepted"] == (check["val_loss_after_trial"] < check["val_loss_before"])
    assert info["refined"] == check["accepted"]
    json.dumps(info)  # goes into report.json as it is


def test_sanitizer_curve_mixup_is_seeded_changes_the_curve_and_is_validated(suspect, budget):
    import copy
    import dataclasses
    from backdoorlab.defenses import ModeConnectivitySanitizer, SanitizerConfig
    model = suspect[0]
    other = copy.deepcopy(model)
    base = SanitizerConfig(steps=12, grid=3, batch_size=64, refine_steps=0, verify=False)
    san = ModeConnectivitySanitizer(base, progress=False)
    fit_part, _ = san.split_budget(budget)
    plain = san.fit_curve(model, other, fit_part)
    mixed = [ModeConnectivitySanitizer(dataclasses.replace(base, curve_mixup=1.0), progress=False).fit_curve(
        model, other, fit_part) for _ in range(2)]
    pc, m0, m1 = (list(c.control) for c in (plain, *mixed))
    assert all(torch.equal(a, b) for a, b in zip(m0, m1))  # seeded: the same control point twice
    assert any(not torch.equal(a, b) for a, b in zip(pc, m0))  # and not the curve trained without mixup
    with pytest.raises(BackdoorlabError, match="curve mixup must be >= 0"):
        SanitizerConfig(curve_mixup=-0.5)
    with pytest.raises(BackdoorlabError, match="cannot be combined"):
        SanitizerConfig(curve_mixup=1.0, curve_distill=0.5)


def _symmetric_path(monkeypatch, accuracies=(0.99, 0.97, 0.90, 0.97, 0.99)):
    """Make the sanitizer's path score t = 0.25 and 0.75 alike on validation (0.5 out of tolerance), with the lower
    loss at 0.75: the rule's two candidates, as on CIFAR-10's two-model paths."""
    from backdoorlab.defenses import ModeConnectivitySanitizer
    real = ModeConnectivitySanitizer.path

    def path(self, *args, **kwargs):
        rows = real(self, *args, **kwargs)
        for r, acc, loss in zip(rows, accuracies, [0.1, 0.40, 0.9, 0.35, 0.1]):
            r["val_accuracy"], r["val_loss"] = acc, loss
        return rows

    monkeypatch.setattr(ModeConnectivitySanitizer, "path", path)


def test_sanitizer_exports_the_mean_of_two_equally_far_candidates(suspect, budget, monkeypatch):
    import copy
    import dataclasses
    from backdoorlab.defenses import ModeConnectivitySanitizer, SanitizerConfig
    from backdoorlab.models import Ensemble
    _symmetric_path(monkeypatch)
    model = suspect[0]
    other = copy.deepcopy(model)
    cfg = SanitizerConfig(steps=20, grid=5, batch_size=64, ca_tolerance=0.02, refine_steps=0,
                          second_endpoint="scratch", verify=False)
    san = ModeConnectivitySanitizer(cfg, progress=False)
    result = san.sanitize(model, budget, other)
    assert result.t == 0.75 and result.ensemble_ts == [0.25, 0.75] and isinstance(result.model, Ensemble)
    fit_part, _ = san.split_budget(budget)
    members = [result.curve.model_at(t, bn_data=san.bn_data(fit_part)) for t in (0.75, 0.25)]
    x = budget.x[:20].float() / 255
    with torch.no_grad():
        torch.testing.assert_close(result.model(x).exp(), torch.stack([m(x).softmax(1) for m in members]).mean(0))
    single = ModeConnectivitySanitizer(dataclasses.replace(cfg, ensemble=False), progress=False).sanitize(
        model, budget, other)
    assert single.t == 0.75 and single.ensemble_ts is None and not isinstance(single.model, Ensemble)
    one = san.sanitize(model, budget)  # one suspect: no two points are equally far from it
    assert one.ensemble_ts is None
    # the refine step trains the ensemble as one model (its averaged output), both members
    refined = ModeConnectivitySanitizer(dataclasses.replace(cfg, refine_steps=10, refine_guard=False),
                                        progress=False).sanitize(model, budget, other)
    assert refined.refined and isinstance(refined.model, Ensemble)
    for i in range(2):
        before, after = result.model.members[i].state_dict(), refined.model.members[i].state_dict()
        assert any(not torch.equal(before[k], after[k]) for k in before)
    # only the ends within tolerance: they are the suspects, never exported; the best point inside is, with the
    # verdict that it lies outside the tolerance
    _symmetric_path(monkeypatch, (0.99, 0.5, 0.5, 0.5, 0.98))
    ends = san.sanitize(model, budget, other)
    assert ends.t == 0.5 and ends.ensemble_ts is None and not isinstance(ends.model, Ensemble)
    assert ends.verdict["within_tolerance"] is False
    # sanitizing two averaged models gives one flat average of all their networks
    nested = Ensemble([Ensemble([copy.deepcopy(model), copy.deepcopy(model)]), result.model])
    assert len(nested.members) == 4 and nested.arch_args["size"] == 4
    with pytest.raises(BackdoorlabError, match="all be single models or all ensembles"):
        Ensemble([model, result.model])
    # ANP perturbs every member's neurons, never a member's classifier
    names = [n for n, _ in neuron_layers(result.model)]
    assert names == [f"members.{i}.{n}" for i in (0, 1) for n, _ in neuron_layers(model)]
    assert not [n for n in names if n.endswith("fc")]


def test_sanitize_cli_writes_an_ensemble_that_loads_and_evaluates(suspect, tmp_path, capsys, monkeypatch):
    _symmetric_path(monkeypatch)
    _, _, m1 = suspect
    out = tmp_path / "ens"
    args = ["sanitize", str(m1), str(m1), "--dataset", "digits", "--clean-budget", "300", "--steps", "20", "--grid",
            "5", "--tolerance", "0.02", "--refine-steps", "0", "--no-verify", "--no-progress"]
    assert main(args + ["--out", str(out), "--json"]) == 0
    r = json.loads(capsys.readouterr().out)
    assert r["t"] == 0.75 and r["ensemble"] == [0.25, 0.75]
    meta = json.loads((out / "model.json").read_text())
    assert meta["arch"] == "ensemble" and meta["arch_args"]["member"] == "small-cnn"
    assert meta["provenance"]["sanitized"]["ensemble"] == [0.25, 0.75]
    assert json.loads((out / "path.json").read_text())["ensemble"] == [0.25, 0.75]
    assert main(["evaluate", str(out), "--json"]) == 0
    ev = json.loads(capsys.readouterr().out)
    assert ev["clean_accuracy"] == pytest.approx(r["clean_accuracy"])
    assert ev["attack_success_rate"] == pytest.approx(r["attack_success_rate"])
    # defenses that edit a network's layers say they cannot handle an ensemble, in one line
    for defense in ("fine-pruning", "fst"):
        assert main(["repair", defense, str(out), "--dataset", "digits", "--clean-budget", "300", "--out",
                     str(tmp_path / defense), "--no-progress"]) == 2
        err = capsys.readouterr().err
        assert err.startswith("error:") and len(err.strip().splitlines()) == 1, err
    assert main(args + ["--out", str(tmp_path / "one"), "--no-ensemble"]) == 0
    text = capsys.readouterr().out
    assert "sanitized (t = 0.75)" in text
    assert json.loads((tmp_path / "one" / "model.json").read_text())["arch"] == "small-cnn"
    assert main(args + ["--out", str(tmp_path / "two")]) == 0
    text = capsys.readouterr().out
    assert "sanitized model at t = 0.25 + 0.75 (the mean of both models' outputs)" in text
    assert "sanitized (t = 0.25 + 0.75)" in text


def test_one_model_sanitizer_with_a_permuted_second_endpoint(suspect, budget):
    """TSC's first stage: the second endpoint computes the suspect's function with its units reordered, both ends
    count as suspects, and the second stage (stages=2) starts from stage 1's choice."""
    import dataclasses
    from backdoorlab.defenses import ModeConnectivitySanitizer, SanitizerConfig
    model = suspect[0]
    cfg = SanitizerConfig(steps=20, grid=5, batch_size=64, refine_steps=0, verify=False)
    assert cfg.second_endpoint == "permuted" and cfg.stages == 1
    result = ModeConnectivitySanitizer(cfg, progress=False).sanitize(model, budget)
    x = budget.x[:50].float() / 255
    with torch.no_grad():
        assert torch.allclose(result.second_model(x), model.eval()(x), atol=1e-4)
    assert _distance(result.second_model, model) > 1.0
    assert result.second_endpoint == "permuted" and [s["stage"] for s in result.stages] == [1]
    assert 0.0 < result.t < 1.0  # both ends are the suspect: never chosen
    assert result.unit_groups["units"] == 32 + 64 + 128 and result.unit_groups["left_alone"] == {
        "fc": "permuting it changes the model's outputs"}
    two = ModeConnectivitySanitizer(dataclasses.replace(cfg, stages=2), progress=False).sanitize(model, budget)
    assert [s["stage"] for s in two.stages] == [1, 2] and two.stages[0]["path"] == result.stages[0]["path"]
    assert two.path is two.stages[1]["path"] and two.t == two.stages[1]["t"] and 0.0 < two.t <= 1.0
    assert "curve_stage_2" in two.seconds
    with pytest.raises(BackdoorlabError, match="stages must be 1 or 2"):
        SanitizerConfig(stages=3)


def _distance(a, b):
    return sum((p - q).pow(2).sum() for p, q in zip(a.parameters(), b.parameters())).sqrt().item()


class _StubCheck:
    """A backdoor check that finds the backdoor on the models named in ``carrying`` (for the rule's tests)."""

    def __init__(self, carrying, targets=(0,)):
        self.carrying, self.findings, self.checks, self.seconds = set(carrying), list(targets), [], 0.0

    @property
    def targets(self):
        return list(self.findings)

    def check(self, model, images, threshold, what=""):
        record = {"model": what, "anomaly_index": {"0": 5.0 if what in self.carrying else 0.5},
                  "carries": what in self.carrying, "seconds": 0.0}
        self.checks.append(record)
        return record

    def to_dict(self):
        return {"checks": self.checks}


def test_sanitizer_moves_away_while_the_check_still_finds_the_backdoor(suspect, budget, monkeypatch):
    from backdoorlab.defenses import ModeConnectivitySanitizer, SanitizerConfig, mode_connectivity
    _symmetric_path(monkeypatch)  # the rule's choice: t = 0.25 and 0.75 averaged
    model = suspect[0]
    cfg = SanitizerConfig(steps=20, grid=5, batch_size=64, ca_tolerance=0.02, refine_steps=0, min_distance=0.25)
    stub = _StubCheck({"t = 0.25 + 0.75"})
    monkeypatch.setattr(mode_connectivity.BackdoorCheck, "from_suspects", lambda *a, **k: stub)
    result = ModeConnectivitySanitizer(cfg, progress=False).sanitize(model, budget)
    assert result.t == 0.5 and result.ensemble_ts is None
    assert result.verdict["backdoor_check"] is True and result.verdict["within_tolerance"] is False
    assert [c["model"] for c in result.verdict["check"]["checks"]] == ["t = 0.25 + 0.75", "t = 0.50"]
    assert result.stages[0]["t"] == 0.5  # the stage's record follows the move
    # found everywhere: the farthest point is kept and the verdict says the backdoor may remain
    stub = _StubCheck({"t = 0.25 + 0.75", "t = 0.50"})
    result = ModeConnectivitySanitizer(cfg, progress=False).sanitize(model, budget)
    assert result.t == 0.5 and result.verdict["backdoor_check"] is False
    from backdoorlab.runs import sanitize_warnings
    assert any("the backdoor may remain" in w for w in sanitize_warnings(result.verdict, cfg))
    # nothing flagged on the suspect: nothing to check, and the verdict says so
    stub = _StubCheck(set(), targets=())
    result = ModeConnectivitySanitizer(cfg, progress=False).sanitize(model, budget)
    assert result.verdict["backdoor_check"] is None and "nothing to check" in result.verdict["check_note"]
    assert sorted(result.ensemble_ts) == [0.25, 0.75]


def test_a_refine_that_brings_the_backdoor_back_is_undone(suspect, budget, monkeypatch):
    from backdoorlab.defenses import ModeConnectivitySanitizer, SanitizerConfig, mode_connectivity
    model = suspect[0]
    cfg = SanitizerConfig(steps=20, grid=3, batch_size=64, refine_steps=10, refine_guard=False)
    stub = _StubCheck({"refined"})
    monkeypatch.setattr(mode_connectivity.BackdoorCheck, "from_suspects", lambda *a, **k: stub)
    result = ModeConnectivitySanitizer(cfg, progress=False).sanitize(model, budget)
    assert result.t == 0.5 and not result.refined
    assert result.refine_check == {"accepted": False, "rejected_by": "backdoor check"}


def test_backdoor_check_places_a_candidate_mask_among_the_suspects_labels():
    from backdoorlab.defenses.backdoor_check import SuspectFinding
    f = SuspectFinding(targets=[0], median=60.0, mad=5.0, anomaly_index=7.0, mask_l1={0: 8.0})
    assert f.index(8.0) == pytest.approx(52 / (1.4826 * 5))
    assert f.index(70.0) == 0.0  # a mask at least as large as the median label's is no anomaly
    assert SuspectFinding([0], 60.0, 0.0, 1e6, {}).index(10.0) == float("inf")


def test_no_refine_when_nothing_on_the_suspect_could_check_it(suspect, budget, monkeypatch):
    from backdoorlab.defenses import ModeConnectivitySanitizer, SanitizerConfig, mode_connectivity
    model = suspect[0]
    cfg = SanitizerConfig(steps=20, grid=3, batch_size=64, refine_steps=10, refine_guard=False)
    stub = _StubCheck(set(), targets=())
    monkeypatch.setattr(mode_connectivity.BackdoorCheck, "from_suspects", lambda *a, **k: stub)
    result = ModeConnectivitySanitizer(cfg, progress=False).sanitize(model, budget)
    assert result.t == 0.5 and not result.refined
    assert result.refine_check["accepted"] is False and "no backdoor check" in result.refine_check["rejected_by"]
    # with a target to check, the same configuration refines
    stub = _StubCheck(set())
    result = ModeConnectivitySanitizer(cfg, progress=False).sanitize(model, budget)
    assert result.refined
