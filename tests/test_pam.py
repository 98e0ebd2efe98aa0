"""PAM (`pam`): Neural Cleanse unlearning whose steps take the gradient at a point displaced towards the suspect."""

import copy
import json
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from backdoorlab.cli import main
from backdoorlab.defenses.finetune import finetune
from backdoorlab.defenses.pam import PAMConfig, PathAwareWeights, pam
from backdoorlab.defenses.repair import REPAIRERS, repair, repairer_config
from backdoorlab.errors import BackdoorlabError
from backdoorlab.train import TrainConfig
from conftest import same_state, state_of

# a short run: Neural Cleanse with few batches, 30 unlearning steps
QUICK = dict(nc_epochs=2, nc_batches_per_epoch=2, steps=30, batch_size=64)


def _flat(tensors) -> torch.Tensor:
    return torch.cat([t.detach().flatten() for t in tensors])


@pytest.mark.parametrize("bad", [-0.1, math.nan, math.inf])
def test_config_refuses_a_bad_rho_in_one_line(bad):
    with pytest.raises(BackdoorlabError, match="rho must be a finite number >= 0") as e:
        repairer_config("pam", rho=bad)
    assert "\n" not in str(e.value)


def test_registered_with_the_authors_rho_and_nc_unlearnings_options():
    entry = REPAIRERS.entry("pam")
    assert entry.config is PAMConfig and not entry.traits["two_models"] and not entry.traits["learns_features"]
    defaults = REPAIRERS.defaults("pam")
    assert defaults.pop("rho") == 0.5
    assert defaults == REPAIRERS.defaults("nc-unlearning")  # the same trigger reversal and unlearning recipe


def test_displacement_has_length_rho_towards_the_reference_and_passes_the_gradient_through():
    torch.manual_seed(0)
    reference, model = nn.Linear(4, 3), nn.Linear(4, 3)
    weights_at = PathAwareWeights(reference, rho=0.3)
    shifted = weights_at(model)
    own, ref = dict(model.named_parameters()), dict(reference.named_parameters())
    step = _flat(shifted[n] - own[n] for n in own)
    towards = _flat(ref[n] - own[n] for n in own)
    assert torch.linalg.vector_norm(step).item() == pytest.approx(0.3, rel=1e-5)
    assert F.cosine_similarity(step, towards, dim=0).item() == pytest.approx(1.0, abs=1e-6)
    assert weights_at.distances[0] == pytest.approx(torch.linalg.vector_norm(towards).item(), rel=1e-6)
    # the gradient with respect to the model's own weights is the gradient at the displaced point
    x = torch.randn(8, 4)
    loss = torch.func.functional_call(model, shifted, (x,)).square().sum()
    loss.backward()
    moved = copy.deepcopy(model)
    with torch.no_grad():
        for n, p in moved.named_parameters():
            p.copy_(shifted[n])
    moved(x).square().sum().backward()
    for n, p in model.named_parameters():
        assert torch.allclose(p.grad, dict(moved.named_parameters())[n].grad, atol=1e-6)
    # at the reference itself there is no direction: no displacement, no division by zero
    still = PathAwareWeights(model, rho=0.3)(model)
    assert all(torch.equal(still[n], p) for n, p in model.named_parameters())


def test_finetune_at_the_model_itself_is_plain_fine_tuning(digits_suspect, digits_budget):
    """``weights_at`` returning the model's own parameters changes nothing, to the bit: the hook is the only
    difference between PAM's steps and Neural Cleanse unlearning's."""
    model = digits_suspect[0]
    cfg = TrainConfig(epochs=0, steps=10, lr=0.01, batch_size=64)
    plain = finetune(model, digits_budget.x, digits_budget.y.long(), cfg, progress=False)
    hooked = finetune(model, digits_budget.x, digits_budget.y.long(), cfg, progress=False,
                      weights_at=lambda m: dict(m.named_parameters()))
    assert same_state(state_of(plain), state_of(hooked))


def test_rho_zero_is_nc_unlearning_and_pam_moves_further_from_the_suspect(digits_suspect, digits_budget):
    model = digits_suspect[0]
    before = state_of(model)
    zero, _ = pam(model, digits_budget, PAMConfig(rho=0.0, **QUICK), progress=False)
    unlearned, _ = repair("nc-unlearning", model, digits_budget, progress=False, **QUICK)
    assert same_state(state_of(zero), state_of(unlearned))
    moved, info = pam(model, digits_budget, PAMConfig(rho=2.0, **QUICK), progress=False)
    assert same_state(state_of(model), before)  # the suspect is untouched
    assert not moved.training and not same_state(state_of(moved), state_of(unlearned))
    _, zero_info = pam(model, digits_budget, PAMConfig(rho=0.0, **QUICK), progress=False)
    assert info["distance_from_suspect"] > zero_info["distance_from_suspect"] > 0
    assert info["unlearned_labels"] == zero_info["unlearned_labels"] and json.dumps(info)
    again, _ = pam(model, digits_budget, PAMConfig(rho=2.0, **QUICK), progress=False)
    assert same_state(state_of(again), state_of(moved))  # seeded


def test_repair_cli_runs_pam_and_refuses_a_bad_rho(digits_suspect, tmp_path, capsys):
    _, _, path = digits_suspect
    out = tmp_path / "pam"
    args = ["repair", "pam", str(path), "--dataset", "digits", "--clean-budget", "300", "--no-progress"]
    options = [f"-o{k.replace('_', '-')}={v}" for k, v in QUICK.items()]
    code = main([*args, *options, "-o", "rho=1.5", "--out", str(out), "--json"])
    captured = capsys.readouterr()
    assert code == 0, captured.err
    r = json.loads(captured.out)
    assert r["defense"] == "pam" and "attack_success_rate" in r["after"]
    assert json.loads((out / "report.json").read_text())["info"]["distance_from_suspect"] > 0
    assert json.loads((out / "config.json").read_text())["options"]["rho"] == 1.5
    assert json.loads((out / "model.json").read_text())["provenance"]["repaired"]["defense"] == "pam"
    code = main([*args, "-o", "rho=-1", "--out", str(tmp_path / "bad")])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and "rho must be a finite number >= 0" in err, err
    assert not (tmp_path / "bad").exists()
