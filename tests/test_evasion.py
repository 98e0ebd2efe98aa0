"""Evasion attacks, defenses, the input-Hessian eigenvalue and the evasion CLI, on the bundled 8x8 digits."""

import json

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from backdoorlab.errors import BackdoorlabError
from backdoorlab.evasion import (FGSM, PGD, AdversarialPatch, AdvTrainConfig, JpegDefense, OnePixel,
                                 input_hessian_top_eigenvalue, jpeg_compress, jpeg_pillow, make_attack, margin_loss,
                                 parse_eps, robust_accuracy)
from backdoorlab.runs import defended_train_run
from backdoorlab.evasion.path import barrier, pearson
from backdoorlab.train import TrainConfig

CFG = TrainConfig(epochs=20, lr=0.05, batch_size=64, seed=0)


@pytest.fixture(scope="module")
def standard(digits, tmp_path_factory):
    """A normally trained digits model (about 98% clean accuracy), saved as a checkpoint."""
    out = tmp_path_factory.mktemp("evasion") / "standard"
    model, _ = defended_train_run(digits, "small-cnn", CFG, str(out), progress=False)
    return model, out


@pytest.fixture(scope="module")
def test_set(digits):
    return digits.test_x[:200].float() / 255, digits.test_y[:200]


def test_parse_eps():
    assert parse_eps("8/255") == pytest.approx(8 / 255)
    assert parse_eps("0.3") == 0.3 and parse_eps(0.5) == 0.5
    for bad in ("0", "-0.1", "abc", "1/0", "nan", 0):
        with pytest.raises(BackdoorlabError):
            parse_eps(bad)


def test_bad_hyperparameters_are_one_line_errors(standard):
    model, _ = standard
    with pytest.raises(BackdoorlabError, match="unknown norm 'l3'"):
        PGD(model, 0.1, norm="l3")
    with pytest.raises(BackdoorlabError, match="unknown loss 'hinge'; valid: 'ce', 'margin'"):
        PGD(model, 0.1, loss="hinge")
    with pytest.raises(BackdoorlabError, match="unknown evasion attack 'cw'; valid: 'fgsm', 'one-pixel'"):
        make_attack("cw", model, 0.1)
    with pytest.raises(BackdoorlabError, match="needs an epsilon"):
        make_attack("pgd", model)
    with pytest.raises(BackdoorlabError, match="steps must be an integer >= 1"):
        PGD(model, 0.1, steps=0)


@pytest.mark.parametrize("norm,eps", [("linf", 0.1), ("l2", 1.0)])
def test_pgd_stays_in_ball_and_image_range(standard, test_set, norm, eps):
    model, _ = standard
    x, y = test_set
    adv = PGD(model, eps, steps=10, norm=norm)(x, y)
    assert adv.shape == x.shape and adv.min() >= 0 and adv.max() <= 1
    delta = (adv - x).flatten(1)
    size = delta.abs().amax(1) if norm == "linf" else delta.norm(dim=1)
    assert size.max() <= eps + 1e-5
    assert size.max() > 0.5 * eps  # it moved
    # uint8 input is accepted and gives the same result (pixel space [0, 1])
    adv8 = PGD(model, eps, steps=10, norm=norm)((x * 255).round().to(torch.uint8), y)
    assert torch.allclose(adv8, adv, atol=1e-6)


def test_pgd_beats_fgsm_and_restarts_never_hurt(standard, test_set):
    model, _ = standard
    x, y = test_set
    clean = robust_accuracy(model, lambda a, b: a, x, y)
    fgsm = robust_accuracy(model, FGSM(model, 0.1), x, y)
    pgd = robust_accuracy(model, PGD(model, 0.1, steps=20), x, y)
    assert clean["clean_accuracy"] == clean["robust_accuracy"] > 0.95
    assert pgd["robust_accuracy"] < fgsm["robust_accuracy"] - 0.05 < clean["robust_accuracy"]
    assert pgd["robust_loss"] > fgsm["robust_loss"] > pgd["clean_loss"]
    more = robust_accuracy(model, PGD(model, 0.1, steps=20, restarts=3), x, y)
    assert more["robust_accuracy"] <= pgd["robust_accuracy"]


def test_targeted_pgd_hits_the_target(standard, test_set):
    model, _ = standard
    x, y = test_set
    r = robust_accuracy(model, PGD(model, 0.3, steps=30, target=3), x, y, target=3)
    assert r["attack_success_rate"] > 0.9
    # per-image targets: each image pushed towards (label + 1) mod 10
    targets = (y + 1) % 10
    adv = PGD(model, 0.3, steps=30)(x, y, targets=targets)
    with torch.no_grad():
        assert (model(adv).argmax(1) == targets).float().mean() > 0.9


def test_margin_loss_sign():
    logits = torch.tensor([[3.0, 1.0, 0.0], [0.0, 2.0, 1.0]])
    y = torch.tensor([0, 0])
    m = margin_loss(logits, y)
    assert m[0] == -2.0 and m[1] == 2.0  # > 0 exactly when misclassified
    assert margin_loss(logits, torch.tensor([1, 1]), targeted=True).tolist() == [-2.0, 1.0]


def test_jpeg_matches_pillow_and_bpda_gradient(test_set):
    x, _ = test_set
    ours, pil = jpeg_compress(x, 75), jpeg_pillow(x, 75)
    assert (ours - pil).abs().mean() < 0.01 and (ours - x).abs().mean() > 0.001
    rgb = torch.rand(4, 3, 16, 16, generator=torch.Generator().manual_seed(0))
    assert (jpeg_compress(rgb, 90) - rgb).abs().mean() < 0.1
    xg = x[:5].clone().requires_grad_(True)
    g_plain, = torch.autograd.grad(jpeg_compress(xg, 75).sum(), xg)
    g_bpda, = torch.autograd.grad(jpeg_compress(xg, 75, bpda=True).sum(), xg)
    assert g_plain.abs().max() == 0  # rounding: no gradient for a naive attacker
    assert torch.equal(g_bpda, torch.ones_like(g_bpda))  # BPDA: the identity


def test_bpda_breaks_jpeg(standard, test_set):
    model, _ = standard
    x, y = test_set
    defended = JpegDefense(model, quality=50)
    plain = robust_accuracy(defended, PGD(defended, 0.1, steps=10), x, y)
    bpda = robust_accuracy(defended, PGD(defended.attackable(True), 0.1, steps=10), x, y)
    assert plain["robust_accuracy"] > 0.9  # apparent robustness: the gradient is zero
    assert bpda["robust_accuracy"] < plain["robust_accuracy"] - 0.15


def test_distillation_masks_ce_gradients_but_not_margin(digits, test_set):
    x, y = test_set
    model, meta = defended_train_run(digits, "small-cnn", CFG, None, distill_temperature=100.0, progress=False)
    assert meta["metrics"]["clean_accuracy"] > 0.9
    assert meta["provenance"]["evasion_defense"]["method"] == "defensive-distillation"
    ce = robust_accuracy(model, PGD(model, 0.2, steps=20), x, y)
    margin = robust_accuracy(model, PGD(model, 0.2, steps=20, loss="margin"), x, y)
    assert ce["robust_accuracy"] > 0.8 and margin["robust_accuracy"] < 0.2


def test_adversarial_training_buys_robustness(digits, standard, test_set):
    x, y = test_set
    cfg = TrainConfig(epochs=12, lr=0.05, batch_size=64, seed=0)
    robust, meta = defended_train_run(digits, "small-cnn", cfg, None, adv=AdvTrainConfig(eps=0.2, steps=3, warmup=0.1),
                                  progress=False)
    assert meta["provenance"]["evasion_defense"]["method"] == "pgd-adversarial-training"
    attack = dict(eps=0.2, steps=20)
    r_adv = robust_accuracy(robust, PGD(robust, **attack), x, y)
    r_std = robust_accuracy(standard[0], PGD(standard[0], **attack), x, y)
    assert r_adv["clean_accuracy"] > 0.9
    assert r_adv["robust_accuracy"] > r_std["robust_accuracy"] + 0.2


def test_adversarial_patch_beats_a_random_patch(standard, digits, tmp_path):
    model, _ = standard
    patch = AdversarialPatch(model, target=0, size=4, steps=150, lr=0.1, max_rotation=10, scale=(0.9, 1.1))
    patch.fit(digits.train_x[:600], digits.train_y[:600])
    keep = digits.test_y != 0
    xt = digits.test_x[keep]
    with torch.no_grad():
        hit = (model(patch.apply(xt)).argmax(1) == 0).float().mean().item()
        random_patch = AdversarialPatch(model, target=0, size=4, max_rotation=10, scale=(0.9, 1.1))
        random_patch.patch = torch.rand(1, 4, 4, generator=torch.Generator().manual_seed(1))
        base = (model(random_patch.apply(xt)).argmax(1) == 0).float().mean().item()
    assert hit > base + 0.05, (hit, base)
    assert patch.history[-1] < patch.history[0]
    out = patch.apply(xt[:10])
    assert out.shape == (10, 1, 8, 8) and out.min() >= 0 and out.max() <= 1
    patch.save_png(tmp_path / "patch.png")
    assert (tmp_path / "patch.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    with pytest.raises(BackdoorlabError, match="does not fit"):
        AdversarialPatch(model, target=0, size=8).fit(digits.train_x[:10], digits.train_y[:10])


def test_one_pixel_changes_at_most_k_pixels(standard, test_set):
    model, _ = standard
    x, y = test_set
    x, y = x[:12], y[:12]
    attack = OnePixel(model, pixels=2, max_iter=10, popsize=20)
    adv = attack(x, y)
    changed = ((adv - x).abs().flatten(1) > 0).sum(1)
    assert changed.max() <= 2
    with torch.no_grad():
        flipped = (model(adv).argmax(1) != y).sum().item()
    assert flipped >= 1  # 8x8 images: two pixels are a lot


def test_hessian_power_iteration_exact_on_quadratic():
    """loss(x) = 1/2 x^T A x per image: the top eigenvalue is A's."""
    torch.manual_seed(0)
    d = 12
    b = torch.randn(d, d)
    a = b @ b.T / d
    flat = nn.Flatten()
    loss = lambda out, _: 0.5 * ((out @ a) * out).sum()  # noqa: E731
    x = torch.rand(3, 1, 3, 4)
    eig = input_hessian_top_eigenvalue(flat, x, torch.zeros(3, dtype=torch.long), iters=200, tol=1e-7, loss_fn=loss)
    assert torch.allclose(eig, torch.linalg.eigvalsh(a)[-1].expand(3), rtol=1e-3)


def test_hessian_power_iteration_matches_exact_hessian_of_a_small_model():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(16, 8), nn.Tanh(), nn.Linear(8, 4))
    x, y = torch.rand(4, 1, 4, 4), torch.tensor([0, 1, 2, 3])
    eig = input_hessian_top_eigenvalue(model, x, y, iters=300, tol=1e-8)
    for i in range(4):
        h = torch.autograd.functional.hessian(lambda z: F.cross_entropy(model(z[None]), y[i:i + 1]), x[i])
        h = h.reshape(16, 16)
        ev = torch.linalg.eigvalsh(h)
        top = ev[ev.abs().argmax()]  # power iteration finds the eigenvalue of largest magnitude
        assert eig[i] == pytest.approx(top.item(), rel=2e-3, abs=1e-6)


def test_pearson_and_barrier():
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    b = barrier([0, 0.5, 1], [1.0, 3.0, 2.0])
    assert b["over_endpoints"] == 1.0 and b["over_line"] == pytest.approx(1.5) and b["at_t"] == 0.5


# ------------------------------------------------------------------------------------------------------- CLI


@pytest.fixture(scope="module")
def cli_main():
    from backdoorlab import cli as cli_module
    from backdoorlab.cli_evasion import register
    register(cli_module.cli)
    register(cli_module.cli)  # a second call is harmless
    return cli_module.main


def run(capsys, main, *args):
    code = main(list(args))
    out, err = capsys.readouterr()
    return code, out, err


def test_cli_robustness_json(standard, cli_main, capsys, tmp_path):
    _, path = standard
    code, out, err = run(capsys, cli_main, "robustness", str(path), "--dataset", "digits", "--attack", "pgd",
                         "--eps", "8/255", "--n-images", "100", "--json", "--no-progress", "--out", str(tmp_path))
    assert code == 0, err
    r = json.loads(out)
    assert {"clean_accuracy", "robust_accuracy", "clean_loss", "robust_loss", "n", "attack"} <= set(r)
    assert r["n"] == 100 and r["attack"]["eps"] == pytest.approx(8 / 255)
    assert 0 <= r["robust_accuracy"] <= r["clean_accuracy"] <= 1
    assert json.loads((tmp_path / "robustness.json").read_text())["robust_accuracy"] == r["robust_accuracy"]
    code, out, err = run(capsys, cli_main, "robustness", str(path), "--attack", "pgd", "--eps", "0.3",
                         "--n-images", "100", "--json", "--no-progress")
    assert code == 0 and json.loads(out)["robust_accuracy"] < r["robust_accuracy"]
    code, out, err = run(capsys, cli_main, "robustness", str(path), "--attack", "pgd", "--eps", "0.1",
                         "--defense", "jpeg", "--bpda", "--target", "1", "--n-images", "50", "--no-progress")
    assert code == 0 and "JPEG q75 (BPDA)" in out and "targeted success" in out


@pytest.mark.parametrize("args,match", [
    (["--attack", "pgd", "--eps", "0"], "epsilon must be > 0"),
    (["--attack", "pgd", "--eps", "-8/255"], "epsilon must be > 0"),
    (["--attack", "nope", "--eps", "0.1"], "unknown evasion attack 'nope'; valid: 'fgsm', 'one-pixel', 'patch'"),
    (["--attack", "pgd"], "needs --eps"),
    (["--attack", "one-pixel", "--eps", "0.1"], "--eps does not apply"),
    (["--attack", "patch"], "give --target"),
    (["--attack", "pgd", "--eps", "0.1", "--bpda"], "--bpda attacks an input defense"),
    (["--attack", "pgd", "--eps", "0.1", "--target", "10"], "target label 10 is out of range"),
    (["--attack", "pgd", "--eps", "0.1", "--dataset", "mnist"], "trained on 'digits', not 'mnist'"),
])
def test_cli_one_line_errors(standard, cli_main, capsys, args, match):
    _, path = standard
    code, _, err = run(capsys, cli_main, "robustness", str(path), *args)
    assert code == 2 and err.startswith("error: ") and match in err and err.count("\n") == 1


def test_cli_adv_train_and_path_robustness(standard, cli_main, capsys, tmp_path):
    _, std_path = standard
    adv = tmp_path / "adv"
    code, out, err = run(capsys, cli_main, "adv-train", "--dataset", "digits", "--arch", "small-cnn", "--eps", "0.2",
                         "--pgd-steps", "2", "--epochs", "8", "--out", str(adv), "--eval-eps", "0.2",
                         "--eval-steps", "5", "--eval-images", "100", "--json", "--no-progress")
    assert code == 0, err
    r = json.loads(out)
    assert r["defense"]["method"] == "pgd-adversarial-training" and r["defense"]["eps"] == 0.2
    assert r["robust_accuracy"] is not None and r["pgd"]["n"] == 100
    meta = json.loads((adv / "model.json").read_text())
    assert meta["provenance"]["evasion_defense"]["steps"] == 2
    out_dir = tmp_path / "path"
    args = ["path-robustness", str(std_path), str(adv), "--out", str(out_dir), "--eps", "0.1", "--pgd-steps", "3",
            "--curve-steps", "30", "--grid", "3", "--n-images", "60", "--hessian-images", "10", "--hessian-iters",
            "5", "--json", "--no-progress"]
    code, out, err = run(capsys, cli_main, *args)
    assert code == 0, err
    r = json.loads(out)
    assert r["curve_source"] == "trained" and [p["t"] for p in r["path"]] == [0.0, 0.5, 1.0]
    assert {"clean_loss", "clean_accuracy", "robust_loss", "robust_accuracy", "hessian_top_eigenvalue"} <= set(
        r["path"][0])
    assert -1 <= r["pearson"]["robust_loss_vs_eigenvalue"] <= 1
    for name in ("path_robustness.json", "path_robustness.png", "curve.safetensors", "config.json"):
        assert (out_dir / name).exists(), name
    # the endpoints are the models themselves: t = 0 reproduces the standard model's clean accuracy
    ev = json.loads(run(capsys, cli_main, "robustness", str(std_path), "--attack", "fgsm", "--eps", "0.1",
                        "--n-images", "60", "--json", "--no-progress")[1])
    assert r["path"][0]["clean_accuracy"] == pytest.approx(ev["clean_accuracy"])
    # a second run reuses the trained curve
    code, out, err = run(capsys, cli_main, *args)
    assert code == 0 and json.loads(out)["curve_source"].endswith("curve.safetensors")
    assert json.loads(out)["path"] == r["path"]
