"""FT-SAM (`finetune-sam`): fine-tuning with (adaptive) sharpness-aware minimization."""

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F

from backdoorlab.cli import main
from backdoorlab.defenses.finetune import finetune
from backdoorlab.defenses.finetune_sam import FinetuneSAMConfig, SAMLoss, finetune_sam, sam_perturbation
from backdoorlab.defenses.repair import REPAIRERS, repair, repairer_config
from backdoorlab.errors import BackdoorlabError
from backdoorlab.metrics import evaluate
from backdoorlab.attacks import backdoor_of
from backdoorlab.tensors import to_float
from conftest import same_state, state_of

QUICK = dict(epochs=30, batch_size=64)  # 120 steps on a budget of 300: about a second


@pytest.mark.parametrize("bad, match", [
    ({"rho": -0.5}, "rho must be a finite number >= 0"),
    ({"rho": math.nan}, "rho must be a finite number >= 0"),
    ({"rho": math.inf}, "rho must be a finite number >= 0"),
    ({"epochs": 0}, "epochs must be an integer >= 1"),
    ({"lr": 0.0}, "lr must be a finite number > 0"),
    ({"label_smoothing": 1.0}, r"label_smoothing must be in \[0, 1\)"),
    ({"schedule": "step"}, "unknown schedule 'step'; valid:"),
    ({"augment": "mixup"}, "unknown augment 'mixup'; valid:"),
])
def test_config_refuses_bad_values_in_one_line(bad, match):
    with pytest.raises(BackdoorlabError, match=match) as e:
        repairer_config("finetune-sam", **bad)
    assert "\n" not in str(e.value)


def test_registered_with_the_papers_defaults():
    entry = REPAIRERS.entry("finetune-sam")
    assert entry.config is FinetuneSAMConfig and not entry.traits["two_models"]
    assert not entry.traits["learns_features"]  # it tunes the suspect: its training augmentation, like finetune
    d = REPAIRERS.defaults("finetune-sam")
    assert (d["rho"], d["adaptive"], d["epochs"], d["lr"], d["batch_size"], d["label_smoothing"], d["schedule"]) == \
        (2.0, True, 100, 0.01, 256, 0.1, "cosine")
    with pytest.raises(BackdoorlabError, match="unknown option 'radius' for finetune-sam; valid:"):
        repairer_config("finetune-sam", radius=1.0)


def test_perturbation_lies_on_the_sam_ball_along_the_gradient():
    torch.manual_seed(0)
    params = [torch.randn(5, 3), torch.randn(4)]
    grads = [torch.randn(5, 3), None]  # a parameter without gradient is not perturbed
    e = sam_perturbation(params, grads, rho=0.7, adaptive=False)
    assert torch.equal(e[1], torch.zeros(4))
    assert torch.linalg.vector_norm(torch.cat([t.flatten() for t in e])).item() == pytest.approx(0.7, rel=1e-5)
    assert F.cosine_similarity(e[0].flatten(), grads[0].flatten(), dim=0) > 0.9999
    e = sam_perturbation(params, grads, rho=2.0, adaptive=True)
    # adaptive: the radius holds for e / |w|, and each weight moves in proportion to w^2 * g
    scaled = torch.cat([(t / p.abs()).flatten() for t, p in zip(e, params)])
    assert torch.linalg.vector_norm(scaled).item() == pytest.approx(2.0, rel=1e-5)
    assert F.cosine_similarity(e[0].flatten(), (params[0] ** 2 * grads[0]).flatten(), dim=0) > 0.9999


def test_sam_step_takes_the_gradient_at_the_perturbed_weights_without_moving_them(digits_suspect, digits_budget):
    model = copy.deepcopy(digits_suspect[0]).train()
    x, y = to_float(digits_budget.x[:64]), digits_budget.y[:64].long()
    before = {n: p.detach().clone() for n, p in model.named_parameters()}
    reference = copy.deepcopy(model)  # one plain forward: the BN statistics a SAM step should leave
    reference(x)
    loss_fn = SAMLoss(model, rho=2.0, adaptive=True, label_smoothing=0.1)
    loss, logits = loss_fn(x, y)
    assert all(torch.equal(p, before[n]) for n, p in model.named_parameters())  # nothing to restore
    assert same_state(dict(model.named_buffers()), dict(reference.named_buffers()))  # the perturbed pass updated copies
    loss.backward()
    # the same step by hand: gradient at w, move the weights by e, gradient there
    manual = copy.deepcopy(digits_suspect[0]).train()
    params = list(manual.parameters())
    plain = F.cross_entropy(manual(x), y, label_smoothing=0.1)
    assert torch.allclose(logits, manual(x).detach(), atol=1e-5)
    e = sam_perturbation(params, torch.autograd.grad(plain, params), 2.0, adaptive=True)
    with torch.no_grad():
        for p, d in zip(params, e):
            p.add_(d)
    perturbed = F.cross_entropy(manual(x), y, label_smoothing=0.1)
    perturbed.backward()
    assert loss.item() == pytest.approx(perturbed.item(), rel=1e-5)
    assert loss.item() > plain.item()  # the ascent step found a worse point
    assert loss_fn.sharpness[0] == pytest.approx(perturbed.item() - plain.item(), abs=1e-5)
    for p, q in zip(model.parameters(), manual.parameters()):
        assert torch.allclose(p.grad, q.grad, rtol=1e-4, atol=1e-6)


def test_repair_returns_a_new_model_is_seeded_and_leaves_the_suspect(digits_suspect, digits_budget):
    model = digits_suspect[0]
    before, was_training = state_of(model), model.training
    repaired, info = repair("finetune-sam", model, digits_budget, progress=False, epochs=5, batch_size=64)
    assert repaired is not model and not repaired.training and model.training == was_training
    assert same_state(state_of(model), before)  # the suspect is untouched
    assert not same_state(state_of(repaired), before)
    assert info["steps"] == 5 * (300 // 64) and info["config"]["rho"] == 2.0
    assert info["sharpness_first_steps"] > 0 and json.dumps(info)
    again, _ = repair("finetune-sam", model, digits_budget, progress=False, epochs=5, batch_size=64)
    assert same_state(state_of(again), state_of(repaired))  # same seed, same model
    other, _ = repair("finetune-sam", model, digits_budget, progress=False, epochs=5, batch_size=64, seed=1)
    assert not same_state(state_of(other), state_of(repaired))


def test_rho_zero_is_plain_fine_tuning_and_sam_departs_from_it(digits_suspect, digits_budget):
    """rho=0 runs the library's fine-tuning with the same recipe, to the bit; rho > 0 changes the result, and plain
    SAM differs from adaptive SAM."""
    model = digits_suspect[0]
    cfg = FinetuneSAMConfig(rho=0.0, label_smoothing=0.0, epochs=5, batch_size=64)
    plain, _ = finetune_sam(model, digits_budget, cfg, progress=False)
    reference = finetune(model, digits_budget.x, digits_budget.y.long(), cfg.train_config(), progress=False)
    assert same_state(state_of(plain), state_of(reference))
    sam, _ = finetune_sam(model, digits_budget, FinetuneSAMConfig(label_smoothing=0.0, epochs=5, batch_size=64),
                          progress=False)
    assert not same_state(state_of(sam), state_of(plain))
    non_adaptive, _ = finetune_sam(model, digits_budget,
                                   FinetuneSAMConfig(rho=0.05, adaptive=False, label_smoothing=0.0, epochs=5,
                                                     batch_size=64), progress=False)
    assert not same_state(state_of(non_adaptive), state_of(sam))
    assert not same_state(state_of(non_adaptive), state_of(plain))


def test_lowers_the_attack_success_rate_more_than_plain_fine_tuning(digits_suspect, digits_budget, digits):
    model, meta, _ = digits_suspect
    backdoor = backdoor_of(meta)
    test = (digits.test_x, digits.test_y, backdoor, digits.num_classes)
    assert evaluate(model, *test)["attack_success_rate"] > 0.95
    sam = evaluate(repair("finetune-sam", model, digits_budget, progress=False, **QUICK)[0], *test)
    plain = evaluate(repair("finetune-sam", model, digits_budget, progress=False, rho=0.0, **QUICK)[0], *test)
    assert sam["clean_accuracy"] >= 0.97
    assert sam["attack_success_rate"] < 0.7 and sam["attack_success_rate"] < plain["attack_success_rate"] - 0.2


def test_repair_cli_runs_finetune_sam(digits_suspect, tmp_path, capsys):
    _, _, path = digits_suspect
    out = tmp_path / "sam"
    code = main(["repair", "finetune-sam", str(path), "--dataset", "digits", "--clean-budget", "300", "--out", str(out),
                 "-o", "epochs=3", "-o", "batch-size=64", "-o", "adaptive=false", "-o", "rho=0.1", "--json",
                 "--no-progress"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    r = json.loads(captured.out)
    assert r["defense"] == "finetune-sam" and "attack_success_rate" in r["after"]
    assert json.loads((out / "report.json").read_text())["info"]["steps"] == 3 * (300 // 64)
    saved = json.loads((out / "model.json").read_text())
    assert saved["provenance"]["repaired"]["defense"] == "finetune-sam"
    options = json.loads((out / "config.json").read_text())["options"]
    assert options["adaptive"] is False and options["rho"] == 0.1 and options["epochs"] == 3
    code = main(["repair", "finetune-sam", str(path), "--dataset", "digits", "-o", "rho=-1", "--out",
                 str(tmp_path / "bad"), "--no-progress"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "rho must be a finite number >= 0" in err, err
